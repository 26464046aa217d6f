import type { BackoffOptions } from './backoff.js'
import type { Clock } from './clock.js'
import type { HeraldError } from './errors.js'
import type { PresenceMember } from './frames.js'
import type { OfflineQueueOptions } from './queue.js'
import type { RetryInfo } from './reconnect.js'
import type { StateChange } from './state.js'
import type { HeraldEvent, Subscription } from './subscription.js'
import type { FetchLike, TransportName, WebSocketConstructor } from './transports/types.js'

export interface ClientOptions {
  /** Herald's base URL: `https://rt.example.com` (or with a prefix, `https://example.com/realtime`). ws:// and wss:// work too. */
  url: string
  /** A JWT. Without `getToken` it cannot be renewed: when it expires the client closes. */
  token?: string
  /**
   * Returns a fresh JWT (e.g. from your backend). Called to connect when `token` is absent, some seconds before the
   * current token's `exp` (the connection is extended with a `refresh` frame, subscriptions untouched), and when the
   * server refuses a token as expired.
   */
  getToken?: () => string | Promise<string>
  /** Transports in order of preference (default all three: websocket, sse, long-poll). */
  transports?: TransportName[]
  /** Reconnection backoff, ms (full jitter; defaults min 500, max 30000, factor 2). */
  backoff?: BackoffOptions
  /** Publishes held while they cannot be sent (default max 1000, overflow `reject-oldest`). */
  offlineQueue?: OfflineQueueOptions
  /** A WebSocket class; default `globalThis.WebSocket`. Node 20 has none: pass the `ws` package's class. */
  WebSocket?: WebSocketConstructor
  /** Default `globalThis.fetch`. */
  fetch?: FetchLike
  /** Time source, for tests. */
  clock?: Clock
  /** Connect now (default) or on `connect()`. */
  autoConnect?: boolean
  /** How long a connection attempt may take before it counts as failed, ms (default 10000). */
  connectTimeout?: number
  /**
   * Dead-connection detection, ms. Defaults come from the server's `pingInterval`: a `ping` frame every interval,
   * dead after 2 × interval + 5 s without any message.
   */
  heartbeat?: { interval?: number, timeout?: number }
  /** A connection that stays up this long resets the backoff, ms (default 5000). */
  stableAfter?: number
  /** While on a fallback transport, try the preferred one again this often, ms (default 60000; 0 = never). */
  upgradeInterval?: number
  /** Renew the token this long before its `exp`, ms (default 30000, at most half its remaining life). */
  refreshBefore?: number
  /** Renew tokens before they expire (default true; needs `getToken`). */
  refresh?: boolean
  /** Long-poll wait, seconds (default 25; the server caps it at POLL_TIMEOUT_MAX). */
  pollTimeout?: number
  /** Client-side pacing of WebSocket frames (default 40 per second, bursts of 80: under the server's default WS_RATE / WS_BURST). */
  sendRate?: { rate: number, burst: number }
}

export interface PublishOptions {
  /** Event name. */
  event?: string
  /** Idempotency id; generated when absent. A retry of the same publish reuses it, so it is stored once. */
  id?: string
  /** Version of the value (latest-value channels): at or below the channel's last one, the publish is dropped (`stale`). */
  version?: number
}

export interface PublishAck {
  channel: string
  offset: number
  epoch: string
  /** True when the id had been stored already (a retry): this is the first result. */
  duplicate: boolean
  /** The publish's `version` was at or below the channel's last: dropped; offset/epoch are the channel's top. */
  stale?: true
}

export interface PresenceInfo { channel: string, members: PresenceMember[], count: { members: number, connections: number } }

export interface HistoryPage { channel: string, epoch: string, offset: number, earliest: number, truncated: boolean, events: HeraldEvent[] }

export interface ClientEvents {
  /** Every transition of the connection state, with its reason. */
  state: StateChange
  /** The transport in use changed (fallback, or an upgrade back to WebSocket). */
  transport: { from: TransportName | null, to: TransportName }
  /** A connection opened (also after a transport switch). */
  connected: { transport: TransportName, client?: string, sub?: string }
  /** A reconnection attempt is scheduled in `delay` ms. */
  reconnect: RetryInfo
  /** An error that is not about one publish or subscription (those reject / go to the subscription). */
  error: HeraldError
  /**
   * The server subscribed this client to a channel it did not ask for (the token's `channels`, the connect hook,
   * the server API): attach listeners to the subscription here; its events follow.
   */
  subscribed: Subscription
}

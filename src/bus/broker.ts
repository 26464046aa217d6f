import type { StreamPosition } from '../protocol/cursor.js'

/**
 * One event of one channel, as the bus assigned it. `frame` is the serialised `event` frame
 * (`{"type":"event","channel":…,"offset":…,"epoch":…,"ts":…,"event"?:…,"data":…}`), built once where the
 * offset is assigned and shared, unchanged, by every subscriber on every transport: a WebSocket text frame,
 * an SSE `data:` line and an element of a long-poll or history `events` array are all this string.
 */
export interface Publication {
  channel: string
  /** Consecutive per channel, starting at 1, within `epoch`. */
  offset: number
  /** Identity of the stream the offsets belong to; it changes when the stream's state was lost. */
  epoch: string
  /** Publish time (ms since the epoch), stamped by the node that accepted the publish. */
  ts: number
  frame: string
}

export interface PublishRequest {
  channel: string
  /** Any JSON value. */
  data: unknown
  /** Optional event name, carried to subscribers. */
  event?: string
  /** Makes a retried publish return the first result instead of publishing twice (within the idempotency window). */
  idempotencyKey?: string
  /**
   * The version of the value this event carries: a publish at or below the channel's last version is dropped (not
   * stored, not delivered) and answered `stale`, so an update retried late never overwrites a newer one.
   */
  version?: number
  /** History bounds for this channel's namespace (default: the broker's). */
  historySize?: number
  historyTtlSeconds?: number
}

export interface PublishResult {
  channel: string
  offset: number
  epoch: string
  /** True when the idempotency key had already been used and this is the first publish's result. */
  duplicate: boolean
  /** The publish carried a `version` at or below the channel's last: dropped; offset/epoch are the channel's top. */
  stale?: true
}

export interface HistoryRequest {
  /** Return publications with offset > since (0: from the oldest kept). */
  since: number
  /** Return at most this many (0: none, only the stream position). */
  limit: number
  /** And stop once their frames reach about this many bytes (always at least one publication). Default: no bound. */
  maxBytes?: number
  /** Age bound of this channel's namespace (default: the broker's). */
  historyTtlSeconds?: number
}

export interface HistoryResult {
  publications: Publication[]
  /** The newest offset of the channel and its epoch, read atomically with `publications`. */
  top: StreamPosition
  /** Offset of the oldest publication still in history; `top.offset + 1` when history is empty. */
  earliest: number
  /**
   * Where the previous epoch ended, when the current one went on from it (a Redis failover or restart, see
   * broker-redis.ts): publications up to `previous.offset` carry `previous.epoch`, and a reader at or before that
   * position continues into the current epoch without loss.
   */
  previous?: StreamPosition
  /**
   * The epochs before `previous` that it went on from in turn (a slot moved away and back, a failover after a
   * move), newest first, each with where it ended: publications up to its offset (and past the one before it)
   * carry its epoch, and a reader in it at or before that offset continues into the current epoch without loss.
   */
  earlier?: StreamPosition[]
}

/** How a broker reports to the hub. */
export interface BrokerHandler {
  /** A publication of a channel this node subscribed to. Called in offset order per channel. */
  onPublication: (pub: Publication) => void
  /**
   * The bus connection was lost and is back (or a subscription moved between Redis nodes): publications of
   * `channels` — of every channel when undefined — may have been missed and must be recovered from history.
   */
  onReconnect: (channels?: string[]) => void
}

/** How a broker reports control messages (see Broker.subscribeControl). */
export interface ControlHandler {
  message: (message: string) => void
  /** Control messages may have been missed (the bus connection came back): state kept on the bus must be read again. */
  missed: () => void
}

/**
 * The epoch of a channel that has no stream (never published to, or forgotten after HISTORY_META_TTL): its
 * position is `{ offset: 0, epoch: EMPTY_EPOCH }`. Reading a channel never creates its stream — only publishing
 * does — so reads of made-up names leave nothing behind; and a reader that started at this position resumes
 * into the stream the first publish creates, whatever epoch that gets (see hub/recovery.ts). Random epochs are
 * 8 characters, so they never equal it.
 */
export const EMPTY_EPOCH = '0'

/**
 * The bus: assigns offsets, keeps bounded history and fans publications out to every node.
 *
 * Publishing must be atomic per channel: assigning the offset, appending to history and broadcasting happen
 * in one step, so a publication that a subscriber receives live is always in history too, and no two
 * publications of a channel share an offset. `publish` resolves only once the publication is stored; if the
 * bus cannot be reached it rejects with HERALD_ERR_BUS_UNAVAILABLE (the publication may or may not have been
 * stored: a retry with the same idempotency key is always safe).
 *
 * Reading history never creates state: a channel without a stream answers `top: { offset: 0, epoch: EMPTY_EPOCH }`.
 * An idempotency key is honoured only within the epoch that stored it.
 */
export interface Broker {
  /** Which backend this is (`memory`, `redis`, …), for /healthz and logs. */
  readonly kind: string
  /** Where publications go. Set once, before `connect`; a broker delivers nothing until it is set. */
  setHandler: (handler: BrokerHandler) => void
  /** Opens the bus's connections. Resolves once publishes can be taken. */
  connect: () => Promise<void>
  publish: (req: PublishRequest) => Promise<PublishResult>
  history: (channel: string, req: HistoryRequest) => Promise<HistoryResult>
  /**
   * Start receiving a channel's live publications on this node (called for the first local subscriber). Calling
   * it again for a subscribed channel re-establishes the subscription (the position check does, when it finds the
   * channel behind the bus).
   */
  subscribe: (channel: string) => Promise<void>
  /** Stop receiving them (called after the last local subscriber left). */
  unsubscribe: (channel: string) => Promise<void>
  /**
   * The bus went backwards: this node delivered `seen` but the channel's head is now below it in the same epoch
   * (a Redis failover or restart lost acknowledged events). Starts a new epoch for the channel, in line with the
   * old one up to its head (HistoryResult.previous), unless it has moved on (another epoch, or past `seen`); true
   * if this call started it. Buses that cannot lose events leave it out.
   */
  restartEpoch?: (channel: string, seen: { offset: number, epoch: string }) => Promise<boolean>
  /**
   * Node-to-node control messages (the server API's commands and queries, control/plane.ts) on one reserved
   * internal channel, which no Herald channel name can collide with. At most once, like all pub/sub. Resolves with
   * how many nodes received it (this one included, once it subscribed); rejects with HERALD_ERR_BUS_UNAVAILABLE.
   * A bus without it serves a single node: the server API then acts on that node alone.
   */
  publishControl?: (message: string) => Promise<number>
  /** Starts delivering every node's control messages (this node's own too) to `handler`. */
  subscribeControl?: (handler: ControlHandler) => Promise<void>
  /**
   * Drops a channel's history and keeps its position (offset and epoch), so offsets go on and a resume from before
   * it is told `history_trimmed`. Resolves with the position.
   */
  removeHistory?: (channel: string) => Promise<StreamPosition>
  /** True while the bus can take publishes. */
  ready: () => boolean
  /** Closes the connections; idempotent. Later calls fail with HERALD_ERR_BUS_UNAVAILABLE. */
  close: () => Promise<void>
}

export interface BrokerOptions {
  history: { size: number, ttlSeconds: number, metaTtlSeconds: number }
  idempotencyTtlSeconds: number
}

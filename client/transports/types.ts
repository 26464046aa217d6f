import type { Clock } from '../clock.js'
import type { Position } from '../cursor.js'
import type { ClientFrame, PollAnswer, ServerFrame } from '../frames.js'
import type { TransportName } from '../../src/protocol/transports.js'

// The server's own list (src/protocol/transports.ts, no dependencies): one name per transport on both sides.
export type { TransportName }

/** The subset of the WebSocket API the client uses: the browser's class and the `ws` package's both fit. */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: any) => void) | null
  onmessage: ((event: any) => void) | null
  onclose: ((event: any) => void) | null
  onerror: ((event: any) => void) | null
  send: (data: string) => void
  close: (code?: number, reason?: string) => void
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

/** `fetch` as the client calls it (the global one of browsers and Node 18+ fits). */
export type FetchLike = (url: string, init?: RequestInit) => Promise<Response>

/** What the client learns when a connection attempt fails or an open connection ends. */
export interface CloseInfo {
  /** Whether the transport had opened (WebSocket/SSE: the `connected` frame arrived; long-poll: a poll answered). */
  opened: boolean
  reason: string
  /** WebSocket close code, or the `code` of an SSE `disconnect` frame. */
  code?: number
  /** HTTP status when the request was answered with an error. */
  status?: number
  /** HERALD_ERR_* code of the error body. */
  errorCode?: string
  message?: string
  /** A liveness failure (heartbeat or connect timeout) rather than a close. */
  timeout?: boolean
}

export interface OpenInfo {
  client?: string
  sub?: string
  pingInterval?: number
  /** WebSocket and SSE: the channels the server subscribes this connection to (none: an empty list). */
  channels?: string[]
}

/** A subscription as a stream (re)opens with it; `server`: made by the server, not named in the request. */
export interface StreamChannel { channel: string, since?: Position, server?: true, delta?: true }

/** Result of an HTTP probe: is the server reachable, and does it accept the token? */
export type ProbeResult = { network: true, message: string } | { network: false, status: number, errorCode?: string, message?: string }

/** The client, as a transport sees it. */
export interface TransportHost {
  readonly base: string
  readonly clock: Clock
  readonly fetch: FetchLike
  readonly settings: TransportSettings
  token: () => string
  /** Active subscriptions with their last positions. */
  channels: () => StreamChannel[]
  /** Whether the token names `channels` of its own: a stream is worth opening even with no subscription of ours. */
  serverChannels: () => boolean
  opened: (info: OpenInfo) => void
  frame: (frame: ServerFrame) => void
  pollAnswer: (answer: PollAnswer, channels: string[]) => void
  closed: (info: CloseInfo) => void
  /** A stream request was refused because of one channel; true when the client dropped that subscription (retry without it). */
  channelRefused: (info: CloseInfo) => boolean
  probe: () => Promise<ProbeResult>
}

export interface TransportSettings {
  connectTimeout: number
  heartbeat: { interval?: number, timeout?: number }
  /** Long-poll wait, seconds. */
  pollTimeout: number
  sendRate: { rate: number, burst: number }
}

export interface Transport {
  readonly name: TransportName
  /** Frames go both ways on this connection (WebSocket): subscribe, publish, presence and refresh travel over it. */
  readonly bidirectional: boolean
  open: () => void
  /** Ends the transport without calling `closed`. */
  close: () => void
  /** The set of subscriptions (or one of their positions) changed. */
  subscriptionsChanged: (change: { added?: string, removed?: string }) => void
  /** A new token is available. */
  tokenChanged: () => void
  /** WebSocket only: send a frame. */
  send?: (frame: ClientFrame) => void
}

/** Reads an HTTP error body; never throws. */
export async function errorOf (res: Response): Promise<{ errorCode?: string, message?: string }> {
  try {
    const body = await res.json() as { code?: unknown, message?: unknown }
    return { errorCode: typeof body.code === 'string' ? body.code : undefined, message: typeof body.message === 'string' ? body.message : undefined }
  } catch {
    return {}
  }
}

export function describe (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** `?channel=a&channel=b&cursor=…` for SSE and long-poll. */
export function streamQuery (channels: StreamChannel[], encode: (p: Iterable<[string, Position]>) => string): URLSearchParams {
  const qs = new URLSearchParams()
  const positions: Array<[string, Position]> = []
  for (const c of channels) {
    // The server's own subscriptions come back by themselves: only their positions go with the request.
    if (c.server !== true) qs.append('channel', c.channel)
    if (c.delta === true) qs.append('delta', c.channel)
    if (c.since !== undefined) positions.push([c.channel, c.since])
  }
  if (positions.length > 0) qs.set('cursor', encode(positions))
  return qs
}

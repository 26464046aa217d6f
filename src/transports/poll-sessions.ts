import type { Principal } from '../auth/permissions.js'
import type { Admission, Sessions } from '../session/sessions.js'
import type { StreamRequest } from './stream-request.js'
import type { DeliveryCounts } from './transport.js'
import { CloseCodes } from '../protocol/codes.js'
import { encodeCursor } from '../protocol/cursor.js'
import { Errors } from '../errors.js'
import { PollTransport, disconnectJson, type Ending, type PollAnswer } from './long-poll.js'

/** The key of a poll: its channels, sorted, each with the position it resumes from. */
function keyOf (channels: readonly string[], positions: (channel: string) => { offset: number, epoch: string } | undefined): string {
  return [...channels].sort().map((channel) => {
    const pos = positions(channel)
    return pos === undefined ? channel : channel + '=' + pos.offset + '@' + pos.epoch
  }).join(' ') // a space: no channel name holds one (a user-limited name holds commas)
}

/** The key of a session only its subject's polls continue (sub and channel names cannot hold a NUL). */
function personalKey (sub: string, key: string): string { return '\0' + sub + '\0' + key }

/** Most sessions ended for good whose next poll is still owed the news (see PollSessions.remember). */
const MAX_ENDINGS = 10_000

export interface PollSessionOptions {
  lingerMs: number
  delivered: DeliveryCounts
  /** Most long-poll sessions on this node, and per token subject (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SUB). */
  maxSessions: number
  maxSessionsPerSub: number
}

/**
 * The long-poll sessions of this node, by key. A poll from a cursor joins the session that answered with that
 * cursor (or is at the same place), or starts a new one that resumes from the cursor. Sessions are bounded per
 * node and per subject; past a bound, the least recently used idle one makes room.
 */
export class PollSessions {
  private readonly byKey = new Map<string, PollTransport>()
  private readonly all = new Set<PollTransport>()
  private readonly bySub = new Map<string, Set<PollTransport>>()
  /** Sessions ended for good with no poll waiting: the next poll of their subject from their key is told. */
  private readonly endings = new Map<string, { ending: Ending, expires: number }>()
  readonly lingerMs: number
  readonly delivered: DeliveryCounts

  constructor (readonly sessions: Sessions, private readonly options: PollSessionOptions) {
    this.lingerMs = options.lingerMs
    this.delivered = options.delivered
    sessions.onDrain(() => { for (const t of [...this.all]) t.session.close(CloseCodes.SERVICE_RESTART, 'server shutting down') })
  }

  get size (): number { return this.all.size }

  /** Waits for the answer to one poll (admitted already: its waiting takes over the place `admission` holds). */
  poll (principal: Principal, request: StreamRequest, timeoutSeconds: number, onClose: (cancel: () => void) => void, admission?: Admission): Promise<PollAnswer> {
    const key = keyOf(request.channels, (channel) => request.cursor.get(channel))
    const personal = personalKey(principal.sub, key)
    const ended = this.endings.get(personal)
    if (ended !== undefined) {
      this.endings.delete(personal)
      admission?.release()
      if (ended.expires > Date.now()) {
        const { code, reason } = ended.ending
        return Promise.resolve({ body: '{"events":[],"cursor":' + JSON.stringify(encodeCursor(request.cursor)) + ',"disconnect":' + disconnectJson({ code, reason }) + '}' })
      }
    }
    // A stream the subscribe hook decided for this subject is never continued by another's poll.
    const transport = this.byKey.get(personal) ?? (request.personal ? undefined : this.byKey.get(key)) ?? this.start(principal, request, request.personal ? personal : key)
    return new Promise((resolve) => {
      const { cancel } = transport.wait(principal, timeoutSeconds, resolve)
      admission?.release()
      onClose(cancel)
    })
  }

  /** Keys a session anew: by the cursor it `answered` with, or (a change of its channels) by the positions it had. */
  rekey (transport: PollTransport, answered: boolean): void {
    if (this.byKey.get(transport.key) === transport) this.byKey.delete(transport.key)
    if (answered) {
      transport.keyPositions = new Map()
      for (const channel of transport.channels) {
        const pos = transport.session.cursor.get(channel)
        if (pos !== undefined) transport.keyPositions.set(channel, { ...pos })
      }
    }
    const key = keyOf(transport.channels, (channel) => transport.keyPositions.get(channel))
    transport.key = transport.personal ? personalKey(transport.session.sub, key) : key
    // Another session already at the same place keeps the key; this one just lingers and ends.
    if (!this.byKey.has(transport.key)) this.byKey.set(transport.key, transport)
  }

  /** A session ended for good while no poll waited: its next poll from the same place, on this node, is told. */
  remember (transport: PollTransport, ending: Ending): void {
    const key = transport.personal ? transport.key : personalKey(transport.session.sub, transport.key)
    if (this.endings.size >= MAX_ENDINGS) this.endings.delete(this.endings.keys().next().value as string)
    this.endings.set(key, { ending, expires: Date.now() + Math.max(this.lingerMs, 1000) })
  }

  forget (transport: PollTransport): void {
    if (!this.all.delete(transport)) return
    if (this.byKey.get(transport.key) === transport) this.byKey.delete(transport.key)
    const mine = this.bySub.get(transport.session.sub)
    mine?.delete(transport)
    if (mine?.size === 0) this.bySub.delete(transport.session.sub)
  }

  private start (principal: Principal, request: StreamRequest, key: string): PollTransport {
    this.makeRoom(principal.sub)
    const transport = new PollTransport([...request.channels], this)
    transport.key = key
    transport.personal = request.personal
    for (const channel of request.channels) {
      const pos = request.cursor.get(channel)
      if (pos !== undefined) transport.keyPositions.set(channel, pos)
    }
    const session = this.sessions.open(transport, principal, { presence: false, quiet: true, connection: false })
    transport.session = session
    this.all.add(transport)
    this.byKey.set(key, transport)
    let mine = this.bySub.get(principal.sub)
    if (mine === undefined) this.bySub.set(principal.sub, mine = new Set())
    mine.add(transport)
    subscribeAll(transport, request)
    return transport
  }

  /** Keeps the sessions within their bounds, ending idle ones (least recently used first) if it must. */
  private makeRoom (sub: string): void {
    const mine = this.bySub.get(sub)
    if (mine !== undefined && mine.size >= this.options.maxSessionsPerSub) this.evictIdle(mine, `${this.options.maxSessionsPerSub} long-poll sessions for ${sub} on this node`)
    if (this.all.size >= this.options.maxSessions) this.evictIdle(this.all, `${this.options.maxSessions} long-poll sessions on this node`)
  }

  private evictIdle (candidates: Iterable<PollTransport>, limit: string): void {
    let oldest: PollTransport | undefined
    for (const t of candidates) if (t.idle && (oldest === undefined || t.lastUsed < oldest.lastUsed)) oldest = t
    if (oldest === undefined) throw new Errors.TOO_MANY_CONNECTIONS(limit)
    oldest.session.close(CloseCodes.NORMAL, 'long-poll session evicted to make room')
  }
}

function subscribeAll (transport: PollTransport, request: StreamRequest): void {
  const { session } = transport
  transport.pendingSubscribes = transport.channels.length
  for (const channel of transport.channels) {
    const pos = request.cursor.get(channel)
    if (pos !== undefined) session.cursor.set(channel, pos)
    let subscribing
    try {
      subscribing = session.subscribe(channel, pos, request.serverChannels.has(channel))
    } catch (err) {
      session.close(CloseCodes.NORMAL, 'subscribe refused')
      throw err
    }
    subscribing.then(() => {
      if (--transport.pendingSubscribes === 0) transport.ready()
    }, (err: unknown) => { transport.pendingSubscribes = 0; transport.fail(err) })
  }
}

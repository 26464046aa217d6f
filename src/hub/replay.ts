import { EMPTY_EPOCH, type Broker, type HistoryResult, type Publication } from '../bus/broker.js'
import type { PresenceMember } from '../presence/presence.js'
import type { StreamPosition } from '../protocol/cursor.js'
import type { RecoveryFailure, SubscribeResult } from './sink.js'
import { recoveryFailure } from './recovery.js'
import { Errors } from '../errors.js'

/**
 * One sink's subscription to one channel, as the hub keeps it. The sink may hand the hub an object of its own to
 * keep (Hub.subscribe's `sub`: a session's state for that channel), which the hub then passes back with every
 * delivery: the sink finds its state for the event without a lookup.
 */
export interface Subscription {
  /** Last offset delivered to this sink. */
  offset: number
  /** Live publications held back while the subscription's replay is being read (the newest LIVE_BUFFER_MAX). */
  buffer: Publication[] | null
  /** The presence entry the sink joined this channel with (and must leave with). */
  member?: PresenceMember
}

/** A replay is read in pages of at most this many events and about this many bytes. */
export const REPLAY_PAGE = 1000
export const REPLAY_PAGE_BYTES = 1024 * 1024
/** Live events held for a subscription while its replay is read; past it the oldest go (and are read from history). */
export const LIVE_BUFFER_MAX = 1000
const RETRY_MS = 500

export interface ReplayContext {
  broker: Broker
  channel: string
  historyTtlSeconds?: number
  sub: Subscription
  /** Still this subscription (not unsubscribed, closed or lost meanwhile)? */
  current: () => boolean
  subscribed: (result: SubscribeResult) => void
  deliver: (pub: Publication) => void
  /** History no longer reaches back to where the replay stands: end the subscription and tell the sink. */
  lost: (reason: RecoveryFailure) => void
  /** The sink's turn to take a page (one at a time per sink, once its earlier pages went out); resolves with `release`. */
  turn: () => Promise<() => void>
  warn: (msg: string, err: unknown) => void
}

/**
 * Replays the events after `since`, page by page, then hands over to live delivery with no gap and no duplicate.
 * A page is read only when the sink has taken the previous one (its outbox drained), so what a connection holds
 * for replays stays within its bounds however far back it resumes; live events are held meanwhile (the newest
 * ones; older ones are read from history by the next page). Resolves once the first page is out, with the
 * subscription's result; the rest follows as the sink drains. A page that finds history trimmed (or reset) past
 * where the replay stands ends the subscription with `lost` — never a silent gap.
 */
export async function replay (ctx: ReplayContext, since: StreamPosition): Promise<SubscribeResult> {
  const { channel, sub } = ctx
  const { page: first, release } = await readPage(ctx, since.offset)
  try {
    if (!ctx.current()) throw new Errors.NOT_SUBSCRIBED(channel) // unsubscribed (or closed) meanwhile
    const { top } = first
    const reason = recoveryFailure(since, first)
    if (reason !== undefined) {
      const result: SubscribeResult = { channel, offset: top.offset, epoch: top.epoch, recovered: false, reason, replayed: 0 }
      sub.offset = top.offset
      ctx.subscribed(result)
      if (!goLive(ctx, top.epoch)) void continueReplay(ctx, top.epoch)
      return result
    }
    const result: SubscribeResult = { channel, offset: since.offset, epoch: top.epoch, recovered: true, replayed: top.offset - since.offset }
    sub.offset = since.offset
    ctx.subscribed(result)
    if (deliverPage(ctx, top.epoch, first)) return result
    void continueReplay(ctx, top.epoch)
    return result
  } finally {
    release()
  }
}

/** Delivers a page; true when that caught the subscription up and it went live. */
function deliverPage (ctx: ReplayContext, epoch: string, page: HistoryResult): boolean {
  for (const pub of page.publications) ctx.deliver(pub)
  return ctx.sub.offset >= page.top.offset && goLive(ctx, epoch)
}

async function continueReplay (ctx: ReplayContext, epoch: string): Promise<void> {
  for (let stalled = false; ;) {
    // A page that moved nothing (history does not have the held events yet, or never will: the bus lost them and
    // the hub is about to say so): the next read waits a little instead of spinning.
    if (stalled) await new Promise((resolve) => setTimeout(resolve, RETRY_MS).unref())
    let read: { page: HistoryResult, release: () => void } | undefined
    try {
      read = await readPage(ctx, ctx.sub.offset)
    } catch (err) {
      if (!ctx.current()) return
      ctx.warn('replay page read failed; retrying', err)
      stalled = true
      continue
    }
    try {
      if (!ctx.current()) return
      const reason = recoveryFailure({ offset: ctx.sub.offset, epoch }, read.page)
      if (reason !== undefined) { ctx.lost(reason); return }
      // Where the replay stands, named in the stream's current epoch (it went on in line from the one before).
      const before = { offset: ctx.sub.offset, epoch }
      epoch = read.page.top.epoch
      if (deliverPage(ctx, epoch, read.page)) return
      stalled = ctx.sub.offset === before.offset && epoch === before.epoch
    } finally {
      read.release()
    }
  }
}

/**
 * Hands over to live delivery if the held live events continue exactly where the replay stands: the next offset
 * in the replay's epoch, or a stream's first event after the empty position (as ChannelState.accept takes it).
 * The held events are the hub's dispatches, in line with each other, so the rest follow the first whatever their
 * epoch. False when they do not continue the replay — the oldest were let go, or the stream went on into another
 * epoch after the page was read (an epoch that goes on in line, or the stream's first event racing a read that
 * found none): the next page reads up to them from history, and says which it was.
 */
function goLive (ctx: ReplayContext, epoch: string): boolean {
  const { sub } = ctx
  const held = (sub.buffer ?? []).filter((p) => p.offset > sub.offset)
  const first = held[0]
  if (first !== undefined) {
    const fromNothing = sub.offset === 0 && epoch === EMPTY_EPOCH && first.offset === 1
    if (first.offset !== sub.offset + 1 || (first.epoch !== epoch && !fromNothing)) return false
  }
  sub.buffer = null
  for (const pub of held) ctx.deliver(pub)
  return true
}

/** Waits for the sink's turn, then reads a page; the caller releases the turn once the page is handed over. */
async function readPage (ctx: ReplayContext, since: number): Promise<{ page: HistoryResult, release: () => void }> {
  const release = await ctx.turn()
  // A turn also comes when the sink closes (its outbox is done): nothing more to read for it then.
  if (!ctx.current()) { release(); throw new Errors.NOT_SUBSCRIBED(ctx.channel) }
  try {
    const page = await ctx.broker.history(ctx.channel, { since, limit: REPLAY_PAGE, maxBytes: REPLAY_PAGE_BYTES, historyTtlSeconds: ctx.historyTtlSeconds })
    return { page, release }
  } catch (err) {
    release()
    throw err
  }
}

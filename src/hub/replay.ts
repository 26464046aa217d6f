import type { Broker, HistoryResult, Publication } from '../bus/broker.js'
import type { PresenceMember } from '../presence/presence.js'
import type { StreamPosition } from '../protocol/cursor.js'
import type { RecoveryFailure, SubscribeResult } from './sink.js'
import { recoveryFailure } from './recovery.js'
import { Errors } from '../errors.js'

/** One sink's subscription to one channel, as the hub keeps it. */
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
  for (;;) {
    let read: { page: HistoryResult, release: () => void } | undefined
    try {
      read = await readPage(ctx, ctx.sub.offset)
    } catch (err) {
      if (!ctx.current()) return
      ctx.warn('replay page read failed; retrying', err)
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS).unref())
      continue
    }
    try {
      if (!ctx.current()) return
      const reason = recoveryFailure({ offset: ctx.sub.offset, epoch }, read.page)
      if (reason !== undefined) { ctx.lost(reason); return }
      if (deliverPage(ctx, epoch, read.page)) return
    } finally {
      read.release()
    }
  }
}

/**
 * Hands over to live delivery if the held live events continue exactly where the replay stands; false when the
 * oldest of them were let go (the next page reads them from history).
 */
function goLive (ctx: ReplayContext, epoch: string): boolean {
  const { sub } = ctx
  const held = (sub.buffer ?? []).filter((p) => p.epoch === epoch && p.offset > sub.offset)
  if (held.length > 0 && held[0].offset !== sub.offset + 1) return false
  sub.buffer = null
  for (const pub of held) ctx.deliver(pub)
  return true
}

/** Waits for the sink's turn, then reads a page; the caller releases the turn once the page is handed over. */
async function readPage (ctx: ReplayContext, since: number): Promise<{ page: HistoryResult, release: () => void }> {
  const release = await ctx.turn()
  try {
    const page = await ctx.broker.history(ctx.channel, { since, limit: REPLAY_PAGE, maxBytes: REPLAY_PAGE_BYTES, historyTtlSeconds: ctx.historyTtlSeconds })
    return { page, release }
  } catch (err) {
    release()
    throw err
  }
}

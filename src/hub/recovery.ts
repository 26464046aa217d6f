import { EMPTY_EPOCH, type HistoryResult } from '../bus/broker.js'
import type { StreamPosition } from '../protocol/cursor.js'
import type { RecoveryFailure } from './sink.js'

/**
 * Why the events after `from` cannot all be replayed from `history` (a page read with `since: from.offset`), if
 * they cannot. The empty position `{ 0, EMPTY_EPOCH }` — a reader that started before the channel had a stream —
 * continues into whatever epoch the first publish gave it, as long as history still starts at offset 1; a reader
 * in the previous epoch of a channel whose epoch went on from it (HistoryResult.previous), or in one that epoch
 * went on from in turn (HistoryResult.earlier), continues likewise.
 */
export function recoveryFailure (from: StreamPosition, history: HistoryResult): RecoveryFailure | undefined {
  const { top, earliest, publications, previous, earlier } = history
  const fromNothing = from.offset === 0 && from.epoch === EMPTY_EPOCH
  // A reader in an earlier epoch, at or before where it ended, saw nothing the new epoch does not go on from (the
  // ends never decrease along the line, so neither did any epoch in between lose what it saw).
  const inLine = [previous, ...(earlier ?? [])].some((p) => p !== undefined && from.epoch === p.epoch && from.offset <= p.offset)
  if (from.epoch !== top.epoch && !fromNothing && !inLine) return 'epoch_changed'
  if (from.offset > top.offset) return 'offset_ahead'
  if (from.offset < top.offset && (earliest > from.offset + 1 || publications[0]?.offset !== from.offset + 1)) return 'history_trimmed'
  return undefined
}

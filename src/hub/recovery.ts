import type { HistoryResult } from '../bus/broker.js'
import type { StreamPosition } from '../protocol/cursor.js'
import type { RecoveryFailure } from './sink.js'

/** Why the events after `from` cannot all be replayed from `history` (read with `since: from.offset`), if they cannot. */
export function recoveryFailure (from: StreamPosition, history: HistoryResult): RecoveryFailure | undefined {
  const { top, earliest, publications } = history
  if (from.epoch !== top.epoch) return 'epoch_changed'
  if (from.offset > top.offset) return 'offset_ahead'
  if (from.offset < top.offset && (earliest > from.offset + 1 || publications.length < top.offset - from.offset)) return 'history_trimmed'
  return undefined
}

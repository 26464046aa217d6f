import type { Broker } from '../bus/broker.js'
import { EMPTY_EPOCH } from '../bus/broker.js'
import type { ChannelState } from './channel.js'

/** How many channels a position check reads at once. */
const CONCURRENCY = 32

/**
 * The safety net under live delivery. Pub/sub is at most once: a subscription can die without a sound (a failover
 * that re-points nothing, a slot moved to another Redis node, a connection healthy at the TCP level but attached to
 * a node that no longer gets the traffic). A channel that has had no publication for a while is checked against
 * the bus: if the stream moved on without this node, it catches up from history (and subscribes again), so a
 * silent loss costs at most one interval of delay — never an event.
 */
export class PositionCheck {
  private readonly timer?: NodeJS.Timeout
  private running = false

  constructor (
    private readonly broker: Broker,
    private readonly intervalMs: number,
    private readonly channels: () => Iterable<ChannelState>,
    private readonly behind: (state: ChannelState) => void
  ) {
    if (intervalMs > 0) this.timer = setInterval(() => { void this.run() }, intervalMs).unref()
  }

  stop (): void { clearInterval(this.timer) }

  /** Checks every live channel idle for `idleMs` (an interval by default); resolves once all are checked. */
  async run (idleMs = this.intervalMs): Promise<void> {
    if (this.running) return
    this.running = true
    try {
      const now = Date.now()
      const idle = [...this.channels()].filter((s) => s.phase === 'live' && now - s.lastDispatch >= idleMs)
      let next = 0
      const worker = async (): Promise<void> => {
        while (next < idle.length) await this.check(idle[next++])
      }
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, idle.length) }, worker))
    } finally {
      this.running = false
    }
  }

  private async check (state: ChannelState): Promise<void> {
    let top
    try {
      top = (await this.broker.history(state.name, { since: 0, limit: 0 })).top
    } catch {
      return // the bus is away: its reconnect will call for a catch-up
    }
    if (state.phase !== 'live') return
    const sameStream = top.epoch === state.epoch || (state.epoch === EMPTY_EPOCH && state.offset === 0)
    if (!sameStream || top.offset > state.offset) this.behind(state)
  }
}

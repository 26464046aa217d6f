import type { Principal } from '../auth/permissions.js'
import type { Namespaces } from '../namespaces.js'
import type { PresenceCount } from './presence.js'
import type { PresenceTracker } from './tracker.js'
import { can } from '../auth/permissions.js'
import { Errors } from '../errors.js'

export interface PresenceMembers {
  members: Array<{ sub: string, info?: unknown, connections: Array<{ client: string, connectedAt: number }> }>
  count: PresenceCount
}

/** Who is in a channel, for the REST routes and the WebSocket `presence` frame; checks permission and namespace first. */
export class PresenceQuery {
  constructor (private readonly tracker: PresenceTracker | undefined, private readonly namespaces: Namespaces) {}

  /** Members grouped by sub, sorted by sub. */
  async members (principal: Principal, channel: string): Promise<PresenceMembers> {
    const tracker = this.check(principal, channel)
    // A counts-only room may hold tens of thousands: its member list is never built.
    if (this.namespaces.require(channel).presenceCountsOnly) throw new Errors.PRESENCE_COUNTS_ONLY(channel)
    const entries = await tracker.store.list(channel)
    const bySub = new Map<string, PresenceMembers['members'][number]>()
    for (const e of entries) {
      let m = bySub.get(e.sub)
      if (m === undefined) {
        m = e.info === undefined ? { sub: e.sub, connections: [] } : { sub: e.sub, info: e.info, connections: [] }
        bySub.set(e.sub, m)
      }
      m.connections.push({ client: e.client, connectedAt: e.connectedAt })
    }
    const members = [...bySub.values()].sort((a, b) => a.sub < b.sub ? -1 : a.sub > b.sub ? 1 : 0)
    return { members, count: { members: members.length, connections: entries.length } }
  }

  async count (principal: Principal, channel: string): Promise<PresenceCount> {
    return await this.check(principal, channel).store.count(channel)
  }

  private check (principal: Principal, channel: string): PresenceTracker {
    if (!can(principal, 'subscribe', channel)) throw new Errors.FORBIDDEN('subscribe', channel)
    if (!this.namespaces.require(channel).presence || this.tracker === undefined) throw new Errors.PRESENCE_DISABLED(channel)
    return this.tracker
  }
}

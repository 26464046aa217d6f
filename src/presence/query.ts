import type { HeraldContext } from '../context.js'
import type { Principal } from '../auth/permissions.js'
import type { PresenceCount } from './presence.js'
import { can } from '../auth/permissions.js'
import { Errors } from '../errors.js'

export interface PresenceMembers {
  members: Array<{ sub: string, info?: unknown, connections: Array<{ client: string, connectedAt: number }> }>
  count: PresenceCount
}

function check (ctx: HeraldContext, principal: Principal, channel: string): NonNullable<HeraldContext['presence']> {
  if (!can(principal, 'subscribe', channel)) throw new Errors.FORBIDDEN('subscribe', channel)
  const ns = ctx.channelOptions(channel)
  if (!ns.presence || ctx.presence === undefined) throw new Errors.PRESENCE_DISABLED(channel)
  return ctx.presence
}

/** Who is in a channel, grouped by sub, for the REST route and the WebSocket `presence` frame. */
export async function presenceOf (ctx: HeraldContext, principal: Principal, channel: string): Promise<PresenceMembers> {
  const presence = check(ctx, principal, channel)
  // A counts-only room may hold tens of thousands: its member list is never built.
  if (ctx.channelOptions(channel).presenceCountsOnly) throw new Errors.PRESENCE_COUNTS_ONLY(channel)
  const entries = await presence.store.list(channel)
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

export async function presenceCountOf (ctx: HeraldContext, principal: Principal, channel: string): Promise<PresenceCount> {
  return await check(ctx, principal, channel).store.count(channel)
}

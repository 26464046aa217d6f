import type { PresenceChange, PresenceCount, PresenceMember, PresenceStore } from './presence.js'

/** Presence of one process (the embedded default). */
export class MemoryPresence implements PresenceStore {
  readonly kind = 'memory'
  /** channel -> client -> member */
  private readonly channels = new Map<string, Map<string, PresenceMember>>()
  /** channel -> sub -> connections */
  private readonly subs = new Map<string, Map<string, number>>()
  private readonly watched = new Set<string>()
  private handler: (change: PresenceChange) => void = () => {}

  async connect (): Promise<void> {}
  setHandler (handler: (change: PresenceChange) => void): void { this.handler = handler }

  async join (channel: string, member: PresenceMember, maxMembers: number): Promise<{ joined: boolean, full: boolean }> {
    const clients = this.channels.get(channel) ?? new Map<string, PresenceMember>()
    const subs = this.subs.get(channel) ?? new Map<string, number>()
    if (clients.has(member.client)) return { joined: false, full: false }
    const n = subs.get(member.sub) ?? 0
    if (n === 0 && maxMembers > 0 && subs.size >= maxMembers) return { joined: false, full: true }
    this.channels.set(channel, clients)
    this.subs.set(channel, subs)
    clients.set(member.client, member)
    subs.set(member.sub, n + 1)
    if (n === 0) this.announce({ channel, type: 'join', sub: member.sub, info: member.info })
    else this.announce({ channel, type: 'connections', sub: member.sub })
    return { joined: n === 0, full: false }
  }

  async leave (channel: string, member: PresenceMember): Promise<void> {
    const clients = this.channels.get(channel)
    if (clients === undefined || !clients.delete(member.client)) return
    const subs = this.subs.get(channel)!
    const n = (subs.get(member.sub) ?? 1) - 1
    if (n > 0) {
      subs.set(member.sub, n)
      this.announce({ channel, type: 'connections', sub: member.sub })
    } else {
      subs.delete(member.sub)
      this.announce({ channel, type: 'leave', sub: member.sub })
    }
    if (clients.size === 0) { this.channels.delete(channel); this.subs.delete(channel) }
  }

  async list (channel: string): Promise<PresenceMember[]> { return [...(this.channels.get(channel)?.values() ?? [])] }

  async count (channel: string): Promise<PresenceCount> {
    return { members: this.subs.get(channel)?.size ?? 0, connections: this.channels.get(channel)?.size ?? 0 }
  }

  async refresh (): Promise<void> {}
  async watch (channel: string): Promise<void> { this.watched.add(channel) }
  async unwatch (channel: string): Promise<void> { this.watched.delete(channel) }
  async close (): Promise<void> { this.channels.clear(); this.subs.clear() }

  private announce (change: PresenceChange): void {
    if (this.watched.has(change.channel)) queueMicrotask(() => this.handler(change))
  }
}

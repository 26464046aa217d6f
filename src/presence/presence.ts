/**
 * Presence: which connections are subscribed to a channel, cluster-wide. A member is a token subject (`sub`);
 * a user with three tabs is one member with three connections. Joins and leaves are member-level: the first
 * connection of a sub joins, its last one leaves.
 *
 * Entries are kept alive by their node: each node refreshes its own entries every `ttl / 3`, and an entry that is
 * not refreshed for `ttl` seconds is removed (and its leave announced) the next time any node touches the channel —
 * at most `ttl + ttl / 3` seconds after its node died. The in-process store has no other node to outlive, so it
 * keeps entries until they leave.
 */
export interface PresenceMember {
  sub: string
  /** Connection id. */
  client: string
  /** ms since 1970 */
  connectedAt: number
  /** The token's `info` claim, if any. */
  info?: unknown
}

export interface PresenceCount {
  /** Distinct subs. */
  members: number
  /** Connections. */
  connections: number
}

/** A member-level change, announced to every node watching the channel. */
export interface PresenceChange {
  channel: string
  /** `connections`: a connection came or went without a member-level change (for counts-only namespaces). */
  type: 'join' | 'leave' | 'connections'
  sub: string
  info?: unknown
}

export interface PresenceStore {
  readonly kind: 'memory' | 'redis'
  connect: () => Promise<void>
  /**
   * Adds a connection. `joined` is true when it is its sub's first connection on the channel. With
   * `maxMembers > 0`, a sub that is not yet a member is refused (`full: true`) once the channel has that many.
   */
  join: (channel: string, member: PresenceMember, maxMembers: number) => Promise<{ joined: boolean, full: boolean }>
  leave: (channel: string, member: PresenceMember) => Promise<void>
  list: (channel: string) => Promise<PresenceMember[]>
  count: (channel: string) => Promise<PresenceCount>
  /** Keeps this node's entries alive (Redis); removes expired ones of dead nodes. */
  refresh: (channel: string, clients: string[]) => Promise<void>
  /** Receive PresenceChange notifications for this channel (from every node). */
  watch: (channel: string) => Promise<void>
  unwatch: (channel: string) => Promise<void>
  setHandler: (handler: (change: PresenceChange) => void) => void
  close: () => Promise<void>
}

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

/**
 * Where presence lives: this process (memory) or Redis, shared by every node. Implementations: presence-memory.ts,
 * presence-redis.ts; the contract suite in test/contract/ runs against each.
 */
export interface PresenceStore {
  /** Which backend this is (`memory`, `redis`, …). */
  readonly kind: string
  /** Opens the store's connections. */
  connect: () => Promise<void>
  /**
   * Adds a connection. `joined` is true when it is its sub's first connection on the channel. With
   * `maxMembers > 0`, a sub that is not yet a member is refused (`full: true`) once the channel has that many.
   * Joining a connection that is already there changes nothing (`joined: false`).
   */
  join: (channel: string, member: PresenceMember, maxMembers: number) => Promise<{ joined: boolean, full: boolean }>
  /** Removes a connection; its sub leaves when it was its last one. Leaving twice is harmless. */
  leave: (channel: string, member: PresenceMember) => Promise<void>
  /** Every connection in the channel, cluster-wide (expired ones of dead nodes removed first). */
  list: (channel: string) => Promise<PresenceMember[]>
  /** Distinct subs and connections, without building the list. */
  count: (channel: string) => Promise<PresenceCount>
  /**
   * Keeps this node's connections alive (Redis: their expiry moves on); removes expired ones of dead nodes. A
   * connection that is missing (lost in an outage) is added back: `members` are this node's current ones.
   */
  refresh: (channel: string, members: PresenceMember[]) => Promise<void>
  /** Receive PresenceChange notifications for this channel (from every node). */
  watch: (channel: string) => Promise<void>
  unwatch: (channel: string) => Promise<void>
  /** Where changes of watched channels go; set before `connect`. */
  setHandler: (handler: (change: PresenceChange) => void) => void
  /** Closes the connections; idempotent. */
  close: () => Promise<void>
}

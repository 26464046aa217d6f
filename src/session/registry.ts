import { TRANSPORTS, type TransportName } from '../protocol/transports.js'
import type { Principal } from '../auth/permissions.js'
import type { Session } from './session.js'

/** A live client connection of any transport, as the registry, the drain and the metrics see it. */
export interface Connection {
  readonly id: string
  readonly transportName: TransportName
  /** Token subject, for the per-subject connection limit. */
  readonly sub: string
  /** Who the token says it is, when the connection keeps it (a revocation closes the connections of its tokens). */
  readonly principal?: Principal
  /** Ends the connection, telling the client why (a close code of protocol/codes.ts). */
  close: (code: number, reason: string) => void
}

/**
 * Every open connection of this node: counted by transport and by subject, closed together on drain. Beside them,
 * every session by subject — long-poll sessions too, which live between their polls and are not connections — for
 * the server API, which acts on a subject's sessions (control/actions.ts).
 */
export class SessionRegistry {
  private readonly all = new Set<Connection>()
  private readonly counts = Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<TransportName, number>
  private readonly bySub = new Map<string, Set<Connection>>()
  private readonly sessionsBySub = new Map<string, Set<Session>>()
  private nextId = 0
  private subjects?: (sub: string, present: boolean) => void

  constructor (readonly nodeId: string) {}

  newId (): string { return this.nodeId + '-' + (++this.nextId).toString(36) }

  add (conn: Connection): void {
    if (this.all.has(conn)) return
    this.all.add(conn)
    this.counts[conn.transportName]++
    addTo(this.bySub, conn.sub, conn)
  }

  delete (conn: Connection): void {
    if (!this.all.delete(conn)) return
    this.counts[conn.transportName]--
    deleteFrom(this.bySub, conn.sub, conn)
  }

  /** Told when a subject's first session on this node opens and when its last one ends (webhooks). */
  setSubjectListener (listener: (sub: string, present: boolean) => void): void { this.subjects = listener }

  /** A session opened (whether or not it is a connection of its own). */
  track (session: Session): void {
    if (addTo(this.sessionsBySub, session.sub, session)) this.subjects?.(session.sub, true)
  }

  untrack (session: Session): void {
    if (deleteFrom(this.sessionsBySub, session.sub, session)) this.subjects?.(session.sub, false)
  }

  /** The open sessions of one token subject (a copy: acting on them may end them). */
  sessionsOf (sub: string): Session[] { return [...this.sessionsBySub.get(sub) ?? []] }

  /** Every open session (a copy). */
  sessions (): Session[] {
    const out: Session[] = []
    for (const set of this.sessionsBySub.values()) out.push(...set)
    return out
  }

  /** Bytes on their way to clients, by transport, over every open session (read at scrape time). */
  outboxBytes (): Record<TransportName, number> {
    const bytes = Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<TransportName, number>
    for (const set of this.sessionsBySub.values()) for (const session of set) bytes[session.transportName] += session.outboxBytes()
    return bytes
  }

  /** Every open connection (a copy). */
  connections (): Connection[] { return [...this.all] }

  /** The open connections of one token subject (a copy). */
  connectionsOf (sub: string): Connection[] { return [...this.bySub.get(sub) ?? []] }

  /** Open connections of one token subject. */
  countOf (sub: string): number { return this.bySub.get(sub)?.size ?? 0 }

  count (transport?: TransportName): number { return transport === undefined ? this.all.size : this.counts[transport] }

  /** Closes every connection (shutdown); connections remove themselves as they go. */
  closeAll (code: number, reason: string): void {
    for (const conn of [...this.all]) conn.close(code, reason)
  }
}

/** Adds; true when `value` is the key's first. */
function addTo<T> (index: Map<string, Set<T>>, key: string, value: T): boolean {
  let set = index.get(key)
  if (set === undefined) index.set(key, set = new Set())
  set.add(value)
  return set.size === 1
}

/** Deletes; true when `value` was the key's last. */
function deleteFrom<T> (index: Map<string, Set<T>>, key: string, value: T): boolean {
  const set = index.get(key)
  if (set === undefined || !set.delete(value)) return false
  if (set.size === 0) index.delete(key)
  return set.size === 0
}

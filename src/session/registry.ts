import { TRANSPORTS, type TransportName } from '../protocol/transports.js'

/** A live client connection of any transport, as the registry, the drain and the metrics see it. */
export interface Connection {
  readonly id: string
  readonly transportName: TransportName
  /** Token subject, for the per-subject connection limit. */
  readonly sub: string
  /** Ends the connection, telling the client why (a close code of protocol/codes.ts). */
  close: (code: number, reason: string) => void
}

/** Every open connection of this node: counted by transport and by subject, closed together on drain. */
export class SessionRegistry {
  private readonly all = new Set<Connection>()
  private readonly counts = Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<TransportName, number>
  private readonly bySub = new Map<string, number>()
  private nextId = 0

  constructor (readonly nodeId: string) {}

  newId (): string { return this.nodeId + '-' + (++this.nextId).toString(36) }

  add (conn: Connection): void {
    if (this.all.has(conn)) return
    this.all.add(conn)
    this.counts[conn.transportName]++
    this.bySub.set(conn.sub, (this.bySub.get(conn.sub) ?? 0) + 1)
  }

  delete (conn: Connection): void {
    if (!this.all.delete(conn)) return
    this.counts[conn.transportName]--
    const n = (this.bySub.get(conn.sub) ?? 1) - 1
    if (n > 0) this.bySub.set(conn.sub, n)
    else this.bySub.delete(conn.sub)
  }

  /** Open connections of one token subject. */
  countOf (sub: string): number { return this.bySub.get(sub) ?? 0 }

  count (transport?: TransportName): number { return transport === undefined ? this.all.size : this.counts[transport] }

  /** Closes every connection (shutdown); connections remove themselves as they go. */
  closeAll (code: number, reason: string): void {
    for (const conn of [...this.all]) conn.close(code, reason)
  }
}

export type TransportName = 'ws' | 'sse' | 'poll'

/** A live client connection of any transport, as the drain and the metrics see it. */
export interface Connection {
  readonly id: string
  readonly transport: TransportName
  /** Token subject, for the per-sub connection limit (long-polls have none: they are not counted per sub). */
  readonly sub?: string
  /** Ends the connection, telling the client why (a WebSocket close code; SSE and long-poll just end). */
  close: (code: number, reason: string) => void
}

/** Every open connection of this node, by transport. */
export class Connections {
  private readonly all = new Set<Connection>()
  private readonly counts: Record<TransportName, number> = { ws: 0, sse: 0, poll: 0 }
  private readonly bySub = new Map<string, number>()
  private nextId = 0

  constructor (private readonly nodeId: string) {}

  newId (): string { return this.nodeId + '-' + (++this.nextId).toString(36) }

  add (conn: Connection): void {
    if (this.all.has(conn)) return
    this.all.add(conn)
    this.counts[conn.transport]++
    if (conn.sub !== undefined) this.bySub.set(conn.sub, (this.bySub.get(conn.sub) ?? 0) + 1)
  }

  delete (conn: Connection): void {
    if (!this.all.delete(conn)) return
    this.counts[conn.transport]--
    if (conn.sub !== undefined) {
      const n = (this.bySub.get(conn.sub) ?? 1) - 1
      if (n > 0) this.bySub.set(conn.sub, n)
      else this.bySub.delete(conn.sub)
    }
  }

  /** Open WebSocket + SSE connections of one token subject. */
  countOf (sub: string): number { return this.bySub.get(sub) ?? 0 }

  count (transport?: TransportName): number { return transport === undefined ? this.all.size : this.counts[transport] }

  /** Closes every connection (shutdown); connections remove themselves as they go. */
  closeAll (code: number, reason: string): void {
    for (const conn of [...this.all]) conn.close(code, reason)
  }
}

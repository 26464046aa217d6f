import { ClientErrorCodes, HeraldError } from './errors.js'
import type { ClientFrame } from './frames.js'
import type { Link } from './connection.js'

interface PendingRequest { resolve: (frame: any) => void, reject: (err: HeraldError) => void }

/** Presence and refresh requests over the current WebSocket, matched to their answers by frame id. */
export class Requests {
  private readonly pending = new Map<string, PendingRequest>()

  constructor (
    private readonly link: Link,
    private readonly nextId: (kind: string) => string
  ) {}

  async send<T>(frame: ClientFrame): Promise<T> {
    const t = this.link.active
    if (t?.bidirectional !== true || !this.link.open) throw new HeraldError(ClientErrorCodes.DISCONNECTED, 'not connected over WebSocket')
    const id = this.nextId('r')
    return await new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      t.send!({ ...frame, id })
    })
  }

  /** Settles request `id` with its answer; false when there is none. */
  resolve (id: string, frame: unknown): boolean {
    const req = this.pending.get(id)
    if (req === undefined) return false
    this.pending.delete(id)
    req.resolve(frame)
    return true
  }

  /** Rejects request `id`; false when there is none. */
  reject (id: string, error: HeraldError): boolean {
    const req = this.pending.get(id)
    if (req === undefined) return false
    this.pending.delete(id)
    req.reject(error)
    return true
  }

  rejectAll (error: HeraldError): void {
    for (const req of this.pending.values()) req.reject(error)
    this.pending.clear()
  }
}

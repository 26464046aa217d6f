import { randomBytes } from 'node:crypto'
import { typeOf, type Announced, type StateChange, type SweepResult, type UpdateResult, type WebhookJob, type WebhookStore, type WebhookType } from './webhook.js'

export interface StoreOptions {
  debounceMs: number
  queueMax: number
}

/**
 * The webhook store of a single node (the in-process bus): keys held, last announced state, debounce checks and the
 * queue, all in this process. Nothing survives a restart, as nothing of the in-process bus does. Members do not
 * matter here: there is one node, and it is never forgotten.
 */
export class MemoryWebhookStore implements WebhookStore {
  readonly kind = 'memory'
  /** Keys with a local holder. */
  private readonly held = new Set<string>()
  /** Keys last announced up (occupied, online). */
  private readonly on = new Set<string>()
  /** Key -> when its debounce check is due. */
  private readonly due = new Map<string, number>()
  /** Jobs in the order they were queued (a Map keeps insertion order: the first is the oldest). */
  private readonly jobs = new Map<string, { job: WebhookJob, visibleAt: number }>()
  private readonly idBase = randomBytes(6).toString('hex')
  private seq = 0

  constructor (private readonly options: StoreOptions) {}

  async connect (): Promise<void> {}

  async close (): Promise<void> { this.jobs.clear() }

  async update (_member: string, _known: boolean, changes: StateChange[], now: number): Promise<UpdateResult> {
    const out: UpdateResult = { forgotten: false, enqueued: 0, dropped: [], length: 0 }
    for (const { key, up } of changes) {
      if (up) {
        this.held.add(key)
        this.due.delete(key)
        if (!this.on.has(key)) { this.on.add(key); this.enqueue(key, true, now, out) }
      } else if (this.held.delete(key) && this.on.has(key)) {
        const at = now + this.options.debounceMs
        this.due.set(key, at)
        out.dueAt = Math.min(out.dueAt ?? at, at)
      }
    }
    out.length = this.jobs.size
    return out
  }

  async sweep (now: number): Promise<SweepResult> {
    const out: SweepResult = { enqueued: 0, dropped: [], length: 0, more: false }
    for (const [key, at] of this.due) {
      if (at > now) { out.nextDue = Math.min(out.nextDue ?? at, at); continue }
      this.due.delete(key)
      if (!this.held.has(key) && this.on.delete(key)) this.enqueue(key, false, now, out)
    }
    out.length = this.jobs.size
    return out
  }

  async retire (): Promise<void> {}

  async claim (n: number, now: number, hiddenUntil: number): Promise<{ jobs: WebhookJob[], length: number }> {
    const jobs: WebhookJob[] = []
    for (const entry of this.jobs.values()) {
      if (jobs.length >= n) break
      if (entry.visibleAt > now) continue
      entry.visibleAt = hiddenUntil
      entry.job.attempts++
      jobs.push({ ...entry.job })
    }
    return { jobs, length: this.jobs.size }
  }

  async ack (id: string): Promise<void> { this.jobs.delete(id) }

  async retry (id: string, at: number): Promise<void> {
    const entry = this.jobs.get(id)
    if (entry !== undefined) entry.visibleAt = at
  }

  async remove (id: string): Promise<void> { this.jobs.delete(id) }

  private enqueue (key: string, up: boolean, now: number, out: Announced): void {
    const type: WebhookType = typeOf(key, up)
    const job: WebhookJob = { id: `${this.idBase}-${(++this.seq).toString(36)}`, type, ts: now, attempts: 0 }
    if (key.startsWith('c:')) job.channel = key.slice(2)
    else job.sub = key.slice(2)
    this.jobs.set(job.id, { job, visibleAt: now })
    out.enqueued++
    // Full: the oldest go first (they are the likeliest to be stale already).
    for (const [id, entry] of this.jobs) {
      if (this.jobs.size <= this.options.queueMax) break
      this.jobs.delete(id)
      out.dropped.push(entry.job.type)
    }
  }
}

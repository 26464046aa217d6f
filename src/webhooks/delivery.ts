import type { Logger } from 'pino'
import { version } from '../version.js'
import { backoffMs, bodyOf, signatureOf, type WebhookJob, type WebhookStore, type WebhookType } from './webhook.js'

/** Deliveries in flight per node at once (a hung receiver holds at most this many, each until WEBHOOK_TIMEOUT_MS). */
const CONCURRENCY = 8

/** What a delivery did: `sent` (2xx), `failed` (an attempt did not succeed), `retried` (and another is scheduled), `dropped` (given up). */
export type DeliveryResult = 'sent' | 'failed' | 'retried' | 'dropped'

export interface DeliveryOptions {
  store: WebhookStore
  url: string
  secret: string
  timeoutMs: number
  maxAttempts: number
  /** How often this node looks for jobs it was not told about (queued by other nodes, retries, orphaned claims). */
  pollMs: number
  log: Logger
  count: (type: WebhookType, result: DeliveryResult) => void
  /** The queue's length, as the store last said. */
  length: (n: number) => void
}

/**
 * Takes jobs from the store and POSTs them to WEBHOOK_URL: signed, with a timeout, at most CONCURRENCY at a time.
 * A 2xx answer removes the job; anything else (another status, a timeout, a refused connection, a redirect)
 * schedules another try after the backoff, up to WEBHOOK_MAX_ATTEMPTS. A job is hidden while claimed for twice
 * the timeout and 5 s more: if this node dies meanwhile, any node takes it up after that.
 */
export class Delivery {
  private readonly inFlight = new Map<string, Promise<void>>()
  private readonly abort = new AbortController()
  private pumping = false
  private again = false
  private poller?: NodeJS.Timeout
  private wake?: { at: number, timer: NodeJS.Timeout }
  private failing = false
  private closed = false

  constructor (private readonly options: DeliveryOptions) {}

  private get visibilityMs (): number { return 2 * this.options.timeoutMs + 5000 }

  start (): void {
    this.poller = setInterval(() => { this.kick() }, this.options.pollMs).unref()
    this.kick()
  }

  /** Something may be ready: claim what there is room for. */
  kick (): void {
    if (this.closed) return
    if (this.pumping) { this.again = true; return }
    void this.pump()
  }

  /** Stops claiming; deliveries under way are cut short and handed back to the queue, visible at once to other nodes. */
  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.poller)
    clearTimeout(this.wake?.timer)
    this.abort.abort()
    await Promise.all(this.inFlight.values())
  }

  private async pump (): Promise<void> {
    this.pumping = true
    try {
      do {
        this.again = false
        const room = CONCURRENCY - this.inFlight.size
        if (room <= 0) break
        const now = Date.now()
        const { jobs, length } = await this.options.store.claim(room, now, now + this.visibilityMs)
        this.options.length(length)
        if (this.failing) this.options.log.info('webhooks: the queue answers again')
        this.failing = false
        for (const job of jobs) {
          const sent = this.send(job).finally(() => { this.inFlight.delete(job.id); this.kick() })
          this.inFlight.set(job.id, sent)
        }
        if (jobs.length === room) this.again = true
      } while (this.again && !this.closed)
    } catch (err) {
      if (!this.failing) this.options.log.warn({ err: (err as Error).message }, 'webhooks: could not claim from the queue; trying again')
      this.failing = true
    } finally {
      this.pumping = false
    }
  }

  private async send (job: WebhookJob): Promise<void> {
    const { log, store, count } = this.options
    const body = bodyOf(job)
    let outcome: string
    let ok = false
    try {
      const res = await fetch(this.options.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': `herald/${version}`,
          'x-herald-signature': signatureOf(body, this.options.secret),
          'x-herald-attempt': String(job.attempts)
        },
        body,
        // A redirect would send the body somewhere WEBHOOK_URL does not name: a failure instead.
        redirect: 'error',
        signal: AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs), this.abort.signal])
      })
      await res.body?.cancel().catch(() => {})
      ok = res.ok
      outcome = `status ${res.status}`
    } catch (err) {
      outcome = (err as Error).name === 'TimeoutError' ? `no answer within ${this.options.timeoutMs} ms` : (err as Error).message
    }
    try {
      if (ok) {
        await store.ack(job.id)
        count(job.type, 'sent')
      } else if (this.closed) {
        // Shutting down: another node (or this one, restarted) takes it up at once, as this attempt never finished.
        await store.retry(job.id, Date.now())
      } else if (job.attempts >= this.options.maxAttempts) {
        await store.remove(job.id)
        count(job.type, 'failed')
        count(job.type, 'dropped')
        log.warn({ id: job.id, type: job.type, attempts: job.attempts, outcome }, 'webhook dropped after its last attempt')
      } else {
        const at = Date.now() + backoffMs(job.attempts)
        await store.retry(job.id, at)
        count(job.type, 'failed')
        count(job.type, 'retried')
        log.info({ id: job.id, type: job.type, attempts: job.attempts, outcome }, 'webhook delivery failed; retrying')
        this.wakeAt(at)
      }
    } catch (err) {
      // The job stays claimed: it comes back when its visibility timeout ends (delivered again if it was sent).
      log.warn({ err: (err as Error).message, id: job.id }, 'webhooks: could not update the queue after a delivery')
    }
  }

  /** Claims again at `at` (a retry this node scheduled); the poller covers the rest. */
  private wakeAt (at: number): void {
    if (this.closed || (this.wake !== undefined && this.wake.at <= at)) return
    clearTimeout(this.wake?.timer)
    const timer = setTimeout(() => { this.wake = undefined; this.kick() }, Math.max(0, at - Date.now()) + 1).unref()
    this.wake = { at, timer }
  }
}

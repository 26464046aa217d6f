import { createHmac, timingSafeEqual } from 'node:crypto'
import type { TestContext } from 'node:test'
import Fastify from 'fastify'

/** One POST the receiver got: its raw body (parsed too), headers, and what it answered. */
export interface Received {
  raw: string
  body: { id: string, type: string, ts: number, channel?: string, sub?: string }
  headers: Record<string, string | string[] | undefined>
  answer: 'ok' | 'fail' | 'hang'
  at: number
}

export type Mode = 'ok' | 'fail' | 'hang'

/**
 * A webhook receiver on a free loopback port: records every request's raw body and headers, and answers as told —
 * 200, 500, or nothing at all until the sender gives up (hang). `plan` answers the next requests in order, then
 * `mode` takes over.
 */
export class Receiver {
  readonly received: Received[] = []
  mode: Mode = 'ok'
  plan: Mode[] = []
  url = ''
  private waiters: Array<() => void> = []

  static async start (t: TestContext): Promise<Receiver> {
    const r = new Receiver()
    const app = Fastify({ logger: false, forceCloseConnections: true })
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => { done(null, body) })
    app.post('/hook', async (request, reply) => {
      const raw = request.body as string
      const answer = r.plan.shift() ?? r.mode
      r.received.push({ raw, body: JSON.parse(raw), headers: request.headers, answer, at: Date.now() })
      r.wake()
      if (answer === 'hang') {
        await new Promise((resolve) => request.raw.socket.once('close', resolve))
        return await reply.hijack()
      }
      return await reply.code(answer === 'ok' ? 200 : 500).send(answer === 'ok' ? 'ok' : 'no')
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    r.url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/hook`
    t.after(async () => { await app.close() })
    return r
  }

  /** Bodies answered 200 (what a receiver that drops duplicates by id keeps), optionally of one channel or subject. */
  delivered (filter: { channel?: string, sub?: string, type?: string } = {}): Received['body'][] {
    const seen = new Set<string>()
    return this.received.filter((r) => {
      if (r.answer !== 'ok' || !matches(r.body, filter) || seen.has(r.body.id)) return false
      seen.add(r.body.id)
      return true
    }).map((r) => r.body)
  }

  /** Every request of one webhook id (its attempts), in order. */
  attempts (id: string): Received[] { return this.received.filter((r) => r.body.id === id) }

  /** Waits until `check` holds (re-checked at every request), or fails after `timeoutMs` saying `what`. */
  async until (check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!check()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out: ${what}; received: ${JSON.stringify(this.received.map((r) => [r.answer, r.body]))}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200))
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }
}

function matches (body: Received['body'], filter: { channel?: string, sub?: string, type?: string }): boolean {
  return (filter.channel === undefined || body.channel === filter.channel) &&
    (filter.sub === undefined || body.sub === filter.sub) &&
    (filter.type === undefined || body.type === filter.type)
}

/** What a receiver does: recompute the HMAC of the raw body with its secret and compare in constant time. */
export function verifySignature (raw: string, header: string | string[] | undefined, secret: string): boolean {
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false
  const expected = Buffer.from(createHmac('sha256', secret).update(raw).digest('hex'))
  const got = Buffer.from(header.slice(7))
  return got.length === expected.length && timingSafeEqual(got, expected)
}

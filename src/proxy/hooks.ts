import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { Counter, Histogram, type Registry } from 'prom-client'
import type { Logger } from 'pino'
import type { HeraldConfig } from '../config.js'
import type { TransportName } from '../protocol/transports.js'
import { Errors, type HeraldError } from '../errors.js'

/** The four hooks (docs/proxy.md). */
export type HookName = 'connect' | 'subscribe' | 'publish' | 'refresh'

/** Largest hook answer read: a connect answer with 3 lists of 256 patterns and an `info` fits many times over. */
export const MAX_ANSWER_BYTES = 256 * 1024

/** What the application may say when it refuses: shown to the client as `app` beside Herald's own code. */
const AppError = Type.Object({
  error: Type.Object({
    code: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' }),
    message: Type.Optional(Type.String({ maxLength: 512 }))
  })
})
const checkAppError = Compile(AppError)

export interface AppErrorInfo { code: string, message?: string }

/** A refusal by the application, carrying its own code and message (errorBody and error frames pass `app` on). */
export type RefusedError = HeraldError & { app?: AppErrorInfo }

/** The application's answers, by hook. Extra fields are ignored; wrong types are the application's bug (503). */
export const ConnectAnswer = Type.Object({
  sub: Type.String(),
  info: Type.Optional(Type.Unknown()),
  subscribe: Type.Optional(Type.Array(Type.String())),
  publish: Type.Optional(Type.Array(Type.String())),
  channels: Type.Optional(Type.Array(Type.String())),
  exp: Type.Optional(Type.Number())
})
export const SubscribeAnswer = Type.Object({ data: Type.Optional(Type.Unknown()) })
export const PublishAnswer = Type.Object({ data: Type.Optional(Type.Unknown()) })
export const RefreshAnswer = Type.Object({ exp: Type.Number(), info: Type.Optional(Type.Unknown()) })

const checks = {
  connect: Compile(ConnectAnswer),
  subscribe: Compile(SubscribeAnswer),
  publish: Compile(PublishAnswer),
  refresh: Compile(RefreshAnswer)
}

export interface HookAnswers {
  connect: Static<typeof ConnectAnswer>
  subscribe: Static<typeof SubscribeAnswer>
  publish: Static<typeof PublishAnswer>
  refresh: Static<typeof RefreshAnswer>
}

/** What each hook is sent (only the connection's own user and request: a hook never sees another user's data). */
export interface HookRequests {
  connect: { transport: TransportName, headers: Record<string, string>, ip: string }
  subscribe: { sub: string, channel: string, info?: unknown, transport: TransportName }
  publish: { sub: string, channel: string, data: unknown, event?: string, info?: unknown }
  refresh: { sub: string, transport: TransportName, info?: unknown }
}

/**
 * The proxy hooks: Herald asks the application over HTTP (a POST of JSON) whether a client may connect, subscribe
 * or publish, and whether a connection it admitted may go on. Each call has a timeout (PROXY_TIMEOUT_MS) and a
 * place among at most PROXY_MAX_INFLIGHT calls of this node; what the application answers is read up to
 * MAX_ANSWER_BYTES and checked against the hook's schema. Outcomes: the answer (2xx), HERALD_ERR_PROXY_REFUSED
 * (4xx, with the application's own `{error: {code, message}}` as `app`), or HERALD_ERR_PROXY_UNAVAILABLE
 * (timeout, 5xx, unreachable, a malformed answer, or too many calls under way): temporary, the client retries.
 */
export class ProxyHooks {
  private inflight = 0
  private readonly urls: Record<HookName, string | undefined>
  private readonly calls: Counter<'hook' | 'result'>
  private readonly duration: Histogram<'hook'>

  constructor (private readonly config: HeraldConfig['proxy'], registry: Registry, private readonly log: Logger) {
    this.urls = { connect: config.connectUrl, subscribe: config.subscribeUrl, publish: config.publishUrl, refresh: config.refreshUrl }
    this.calls = new Counter({ name: 'herald_proxy_requests_total', help: 'Proxy hook calls, by hook and result (ok, refused, timeout, error, overloaded)', labelNames: ['hook', 'result'], registers: [registry] })
    this.duration = new Histogram({ name: 'herald_proxy_duration_seconds', help: 'How long the application took to answer a proxy hook', labelNames: ['hook'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry] })
  }

  /** Whether that hook has a URL. */
  has (hook: HookName): boolean { return this.urls[hook] !== undefined }

  /** The request headers the connect hook is given (PROXY_HEADERS), and no other. */
  selectHeaders (headers: Record<string, string | string[] | undefined>): Record<string, string> {
    const out: Record<string, string> = {}
    for (const name of this.config.headers) {
      const value = headers[name]
      if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value
    }
    return out
  }

  async call<H extends HookName> (hook: H, body: HookRequests[H]): Promise<HookAnswers[H]> {
    const url = this.urls[hook]
    if (url === undefined) throw new Error(`proxy hook ${hook} is not configured`)
    if (this.inflight >= this.config.maxInflight) {
      this.calls.inc({ hook, result: 'overloaded' })
      throw new Errors.PROXY_UNAVAILABLE(hook, `${this.config.maxInflight} hook calls under way (PROXY_MAX_INFLIGHT)`)
    }
    this.inflight++
    const stop = this.duration.startTimer({ hook })
    try {
      const answer = await this.post(hook, url, body)
      this.calls.inc({ hook, result: 'ok' })
      return answer
    } catch (err) {
      const code = (err as HeraldError).code
      this.calls.inc({ hook, result: code === 'HERALD_ERR_PROXY_REFUSED' ? 'refused' : (err as { timeout?: boolean }).timeout === true ? 'timeout' : 'error' })
      throw err
    } finally {
      stop()
      this.inflight--
    }
  }

  private async post<H extends HookName> (hook: H, url: string, body: HookRequests[H]): Promise<HookAnswers[H]> {
    let response: Response
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.config.timeoutMs),
        redirect: 'error'
      })
    } catch (err) {
      const timeout = (err as Error).name === 'TimeoutError'
      this.log.warn({ hook, err: (err as Error).message }, 'proxy hook failed')
      throw Object.assign(new Errors.PROXY_UNAVAILABLE(hook, timeout ? `no answer within ${this.config.timeoutMs} ms` : 'unreachable'), { timeout })
    }
    let text: string
    try {
      text = await readCapped(response, MAX_ANSWER_BYTES)
    } catch (err) {
      const timeout = (err as Error).name === 'TimeoutError'
      throw Object.assign(new Errors.PROXY_UNAVAILABLE(hook, timeout ? `no answer within ${this.config.timeoutMs} ms` : (err as Error).message), { timeout })
    }
    const status = response.status
    if (status >= 400 && status < 500) throw refusal(status, parseJson(text))
    if (status < 200 || status >= 300) {
      this.log.warn({ hook, status }, 'proxy hook answered with an error')
      throw new Errors.PROXY_UNAVAILABLE(hook, `answered ${status}`)
    }
    const value = text === '' ? {} : parseJson(text)
    if (!checks[hook].Check(value)) {
      this.log.warn({ hook }, 'proxy hook answer does not have the expected shape')
      throw new Errors.PROXY_UNAVAILABLE(hook, 'its answer is not the JSON it should be (docs/proxy.md)')
    }
    return value as HookAnswers[H]
  }
}

/** A 4xx: HERALD_ERR_PROXY_REFUSED with the application's status (401 stays 401, any other 4xx is 403) and words. */
function refusal (status: number, body: unknown): RefusedError {
  const app = checkAppError.Check(body) ? (body as Static<typeof AppError>).error : undefined
  const err: RefusedError = new Errors.PROXY_REFUSED(app?.message ?? (app?.code ?? `answered ${status}`))
  if (status === 401) (err as { statusCode: number }).statusCode = 401
  if (app !== undefined) err.app = app.message === undefined ? { code: app.code } : { code: app.code, message: app.message }
  return err
}

function parseJson (text: string): unknown {
  try { return JSON.parse(text) } catch { return undefined }
}

/** The body as text, refusing (and cancelling) one longer than `max` bytes: a hostile answer cannot fill memory. */
async function readCapped (response: Response, max: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? NaN)
  if (declared > max) { await response.body?.cancel(); throw new Error(`its answer exceeds ${max} bytes`) }
  if (response.body === null) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength
    if (size > max) throw new Error(`its answer exceeds ${max} bytes`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

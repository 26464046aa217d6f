import type { Clock } from './clock.js'
import { ClientErrorCodes, HeraldError } from './errors.js'
import type { Tokens } from './tokens.js'
import { type FetchLike, type ProbeResult, describe, errorOf } from './transports/types.js'

/** Herald's REST endpoints, called with the current token. */
export class Rest {
  constructor (
    private readonly url: string,
    private readonly fetchFn: FetchLike,
    private readonly tokens: Tokens,
    private readonly clock: Clock,
    private readonly timeout: number
  ) {}

  /** GET `path`; an expired token is renewed and the request made once more. */
  async get<T>(path: string): Promise<T> {
    await this.tokens.ensure()
    let res: Response
    try {
      res = await this.fetchFn(this.url + path, { headers: { authorization: this.tokens.bearer } })
    } catch (err) {
      throw new HeraldError(ClientErrorCodes.NETWORK, describe(err))
    }
    if (res.status === 401 && this.tokens.renewable) {
      const body = await errorOf(res)
      if (body.errorCode === 'HERALD_ERR_TOKEN_EXPIRED') {
        await this.tokens.renew()
        res = await this.fetchFn(this.url + path, { headers: { authorization: this.tokens.bearer } })
      } else {
        throw new HeraldError(body.errorCode ?? 'HERALD_ERR_UNAUTHORIZED', body.message ?? 'HTTP 401', { status: 401 })
      }
    }
    if (!res.ok) {
      const body = await errorOf(res)
      throw new HeraldError(body.errorCode ?? `HTTP_${res.status}`, body.message ?? `HTTP ${res.status}`, { status: res.status })
    }
    return await res.json() as T
  }

  /** POST one event to `channel`; throws when there is no token or no answer. */
  async publish (channel: string, body: { data: unknown, event?: string, id: string, version?: number }): Promise<Response> {
    await this.tokens.ensure()
    return await this.fetchFn(`${this.url}/v1/channels/${encodeURIComponent(channel)}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: this.tokens.bearer },
      body: JSON.stringify(body)
    })
  }

  /** Is the server there, and does it take the token? `GET /v1/whoami`: 200, or 401 for a refused token. */
  async probe (): Promise<ProbeResult> {
    const controller = new AbortController()
    const timer = this.clock.setTimeout(() => controller.abort(), this.timeout)
    try {
      const res = await this.fetchFn(`${this.url}/v1/whoami`, { headers: { authorization: this.tokens.bearer }, signal: controller.signal })
      return { network: false, status: res.status, ...(await errorOf(res)) }
    } catch (err) {
      return { network: true, message: describe(err) }
    } finally {
      this.clock.clearTimeout(timer)
    }
  }
}

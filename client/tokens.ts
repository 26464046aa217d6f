import type { Clock, TimerHandle } from './clock.js'
import { ClientErrorCodes, HeraldError } from './errors.js'
import { tokenExpiry } from './jwt.js'
import { describe } from './transports/types.js'

const MAX_TIMER = 0x7fffffff

export interface TokensOptions {
  token: string | undefined
  getToken: (() => string | Promise<string>) | undefined
  clock: Clock
  /** Renew this long before `exp`, ms (at most half the remaining life). */
  refreshBefore: number
  /** Whether to renew before expiry at all. */
  refresh: boolean
  closed: () => boolean
  /** Hands a renewed token to the open connection. */
  deliver: (token: string) => Promise<void>
  error: (err: HeraldError) => void
}

/** The current JWT: fetched with getToken when needed, renewed some time before it expires. */
export class Tokens {
  current: string | undefined
  private readonly getToken: (() => string | Promise<string>) | undefined
  private readonly clock: Clock
  private pending: Promise<string> | undefined
  private refreshTimer: TimerHandle | undefined

  constructor (private readonly options: TokensOptions) {
    this.current = options.token
    this.getToken = options.getToken
    this.clock = options.clock
  }

  /** Whether a refused or expired token can be replaced (getToken was given). */
  get renewable (): boolean { return this.getToken !== undefined }

  /** Bearer header value. */
  get bearer (): string { return 'Bearer ' + (this.current ?? '') }

  /** Makes sure there is a token that is not about to expire (fetching one with getToken when needed). */
  async ensure (): Promise<void> {
    if (this.current !== undefined) {
      const exp = tokenExpiry(this.current)
      if (this.getToken === undefined || exp === undefined || exp - this.clock.now() > 1000) return
    }
    await this.renew()
  }

  /** Calls getToken (once for concurrent callers). */
  async renew (): Promise<string> {
    const getToken = this.getToken
    if (getToken === undefined) {
      if (this.current !== undefined) return this.current
      throw new HeraldError(ClientErrorCodes.TOKEN, 'no token')
    }
    this.pending ??= (async () => {
      try {
        let token: unknown
        try {
          token = await getToken()
        } catch (err) {
          throw new HeraldError(ClientErrorCodes.TOKEN, 'getToken failed: ' + describe(err))
        }
        if (typeof token !== 'string' || token === '') throw new HeraldError(ClientErrorCodes.TOKEN, 'getToken returned no token')
        this.current = token
        return token
      } finally {
        this.pending = undefined
      }
    })()
    return await this.pending
  }

  /** Schedules a renewal `refreshBefore` ms before the token's exp (at most half of its remaining life). */
  schedule (): void {
    this.stop()
    if (this.getToken === undefined || !this.options.refresh || this.current === undefined || this.options.closed()) return
    const exp = tokenExpiry(this.current)
    if (exp === undefined) return
    const left = exp - this.clock.now()
    const delay = Math.max(0, left - Math.min(this.options.refreshBefore, left / 2))
    this.refreshTimer = this.clock.setTimeout(() => { void this.refreshNow() }, Math.min(delay, MAX_TIMER))
  }

  stop (): void {
    this.clock.clearTimeout(this.refreshTimer)
    this.refreshTimer = undefined
  }

  /** Gets a new token and hands it to the open connection without dropping it. */
  private async refreshNow (): Promise<void> {
    this.refreshTimer = undefined
    let token: string
    try {
      token = await this.renew()
    } catch (err) {
      if (this.options.closed()) return
      this.options.error(err instanceof HeraldError ? err : new HeraldError(ClientErrorCodes.TOKEN, describe(err)))
      // Try again a little later, while the old token still lives.
      this.refreshTimer = this.clock.setTimeout(() => { void this.refreshNow() }, 1000 + Math.floor(this.clock.random() * 1000))
      return
    }
    if (this.options.closed()) return
    await this.options.deliver(token)
    if (!this.options.closed()) this.schedule()
  }
}

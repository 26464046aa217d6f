import type { Principal } from '../auth/permissions.js'
import { Errors } from '../errors.js'

/**
 * One revocation of the server API (`POST /v1/api/revoke`), in force until `until` (seconds since 1970):
 *  - `sub`: every token of the subject issued before `before` (its `iat` is earlier, or it has none);
 *  - `jti`: the token with that id.
 */
export type Revocation =
  | { kind: 'sub', sub: string, before: number, until: number }
  | { kind: 'jti', jti: string, until: number }

/** The store's key of a revocation: one per subject, one per token id. */
export function revocationKey (r: Revocation): string { return r.kind === 'sub' ? 's:' + r.sub : 'j:' + r.jti }

/** Two revocations of the same subject (or token) are one: the later cutoff and the later end win. */
export function mergeRevocations (a: Revocation, b: Revocation): Revocation {
  if (a.kind === 'sub' && b.kind === 'sub') return { kind: 'sub', sub: a.sub, before: Math.max(a.before, b.before), until: Math.max(a.until, b.until) }
  return { ...b, until: Math.max(a.until, b.until) }
}

/**
 * Where revocations are kept so that every node agrees, nodes started later included: in Redis when Redis is the
 * bus (control/revocations-redis.ts), in this process otherwise. Bounded: past `max` revocations in force, `add`
 * throws HERALD_ERR_TOO_MANY_REVOCATIONS (dropping one would quietly let a revoked token back in).
 */
export interface RevocationStore {
  connect: () => Promise<void>
  /** Stores one, merged with one of the same subject or token id; resolves with what is kept. */
  add: (r: Revocation, now: number) => Promise<Revocation>
  /** Every revocation in force at `now` (seconds). */
  all: (now: number) => Promise<Revocation[]>
  /** Changes whenever a revocation is added: a node compares it to know whether to read them all again. */
  version: () => Promise<string>
  close: () => Promise<void>
}

/** The in-process store (the in-process bus: one node). */
export class MemoryRevocations implements RevocationStore {
  private readonly entries = new Map<string, Revocation>()
  private changes = 0

  constructor (private readonly max: number) {}

  async connect (): Promise<void> {}

  async add (r: Revocation, now: number): Promise<Revocation> {
    this.sweep(now)
    const key = revocationKey(r)
    const existing = this.entries.get(key)
    if (existing === undefined && this.entries.size >= this.max) throw new Errors.TOO_MANY_REVOCATIONS(this.max)
    const kept = existing === undefined ? r : mergeRevocations(existing, r)
    this.entries.set(key, kept)
    this.changes++
    return kept
  }

  async all (now: number): Promise<Revocation[]> {
    this.sweep(now)
    return [...this.entries.values()]
  }

  async version (): Promise<string> { return String(this.changes) }

  async close (): Promise<void> {}

  private sweep (now: number): void {
    for (const [key, r] of this.entries) if (r.until <= now) this.entries.delete(key)
  }
}

/**
 * This node's copy of every revocation in force, so that checking a token costs two Map lookups, never a round
 * trip: filled from the store at start, kept up to date by the control channel (each revocation is applied on
 * every node before the API answers), and read again whenever control messages may have been missed.
 */
export class RevocationList {
  private readonly bySub = new Map<string, { before: number, until: number }>()
  private readonly byJti = new Map<string, number>()

  get size (): number { return this.bySub.size + this.byJti.size }

  /** Why a token is refused (`subject` / `token id`), or undefined when it is not revoked. */
  check (principal: Pick<Principal, 'sub' | 'iat' | 'jti'>, now = Date.now() / 1000): string | undefined {
    const jti = principal.jti === undefined ? undefined : this.byJti.get(principal.jti)
    if (jti !== undefined) {
      if (jti > now) return 'token id'
      this.byJti.delete(principal.jti!)
    }
    const sub = this.bySub.get(principal.sub)
    if (sub !== undefined) {
      if (sub.until <= now) this.bySub.delete(principal.sub)
      else if (principal.iat === undefined || principal.iat < sub.before) return 'subject'
    }
    return undefined
  }

  apply (r: Revocation): void {
    if (r.kind === 'jti') {
      this.byJti.set(r.jti, Math.max(r.until, this.byJti.get(r.jti) ?? 0))
      return
    }
    const had = this.bySub.get(r.sub)
    this.bySub.set(r.sub, had === undefined ? { before: r.before, until: r.until } : { before: Math.max(had.before, r.before), until: Math.max(had.until, r.until) })
  }

  /**
   * What the store has in force, merged in (a read that started before a revocation arrived by the control channel
   * must not drop it: revocations only end by expiring), and the expired ones dropped.
   */
  merge (all: Revocation[], now = Date.now() / 1000): void {
    for (const r of all) this.apply(r)
    for (const [sub, r] of this.bySub) if (r.until <= now) this.bySub.delete(sub)
    for (const [jti, until] of this.byJti) if (until <= now) this.byJti.delete(jti)
  }
}

/**
 * This node's side of revocations: the store, this node's copy, and keeping the copy in step — read whole at start,
 * again when control messages may have been missed (`sync`), and checked every `syncMs` for a version it has not
 * seen (a control message lost without a sign).
 */
export class Revocations {
  readonly list = new RevocationList()
  private seen?: string
  private timer?: NodeJS.Timeout
  private syncing?: Promise<void>

  constructor (private readonly store: RevocationStore, private readonly options: { log: { warn: (obj: object, msg: string) => void }, syncMs: number }) {}

  async start (): Promise<void> {
    await this.store.connect()
    await this.sync()
    this.timer = setInterval(() => { void this.sync().catch((err) => this.options.log.warn({ err: (err as Error).message }, 'revocations: sync failed')) }, this.options.syncMs).unref()
  }

  /** Reads the store again if it changed since the last read (reads run one after another). */
  async sync (): Promise<void> {
    const run = (this.syncing ?? Promise.resolve()).catch(() => {}).then(async () => {
      const version = await this.store.version()
      if (version === this.seen) return
      this.list.merge(await this.store.all(Date.now() / 1000))
      this.seen = version
    })
    this.syncing = run
    await run
  }

  /** Stores a revocation on the bus and applies it here; resolves with what the store keeps (merged). */
  async add (r: Revocation): Promise<Revocation> {
    const kept = await this.store.add(r, Date.now() / 1000)
    this.list.apply(kept)
    return kept
  }

  async close (): Promise<void> {
    clearInterval(this.timer)
    await this.store.close()
  }
}

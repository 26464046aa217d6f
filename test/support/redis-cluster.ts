import { spawn, spawnSync, execFile, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtempSync, mkdirSync, rmSync, readFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { Redis, type RedisOptions } from 'ioredis'

/**
 * A private Redis Cluster for tests: `primaries` masters with `replicasPerPrimary` replicas each (3 + 3 by
 * default), one redis-server per node on 127.0.0.1, formed with `redis-cli --cluster create`. Every operation that
 * changes the cluster (start, failover, moveSlot, restart) returns only once every live node reports
 * cluster_state:ok, lists every node, agrees with every other live node on the slot map and on each node's role,
 * flags no live node as failing, shows no slot half-migrated, and every live replica of a live master has its
 * replication link up. Waits poll every 100 ms against a deadline and fail with the last reason the cluster was
 * not settled.
 *
 * Ports: each node gets a port p whose cluster-bus port p + 10000 is free too, both chosen below the kernel's
 * ephemeral range (so they never collide with the `freePort()` ports other tests take, nor with outgoing
 * connections); 6379 and its neighbours are never used. Every process is started here and only ever stopped by its
 * own PID (also on process exit, should a test crash); the temporary directory goes when the cluster is stopped.
 */

export interface ClusterNode {
  port: number
  /** PID of the redis-server this harness runs (or last ran) on that port; 0 for a node it did not start */
  pid: number
  id: string
  role: 'master' | 'slave'
  masterId?: string
  /** Inclusive ranges, ascending */
  slots: Array<[number, number]>
  /** CLUSTER NODES flags as seen by the node that was asked, without `myself` (e.g. ['master'], ['master', 'fail']) */
  flags: string[]
  /** Whether the harness's process on this port is running */
  alive: boolean
}

export interface RedisCluster {
  /** "127.0.0.1:p1,127.0.0.1:p2,…" of every node: seed list for REDIS_CLUSTER */
  seeds: string
  ports: number[]
  /** CLUSTER NODES as parsed now (reads it fresh from a live node) */
  nodes: () => Promise<ClusterNode[]>
  /** The slot of a key (CRC16, honouring {hash tags}), computed locally */
  slotOf: (key: string | Uint8Array) => number
  /** The master currently serving a slot (as a live node sees it now) */
  masterOf: (slot: number) => Promise<ClusterNode>
  /** redis-cli (with -e: an error reply fails too) against one node of this cluster; returns stdout */
  cli: (port: number, ...args: string[]) => string
  /**
   * SIGKILL the master serving `slot` and wait until its replica has taken over and every live node reports
   * cluster_state:ok and agrees on the new owner; returns the killed and the new master
   */
  failover: (slot: number) => Promise<{ killed: ClusterNode, promoted: ClusterNode }>
  /**
   * Move one slot, with its keys, to another master (the one given, or any other), the way
   * `redis-cli --cluster reshard` does: CLUSTER SETSLOT IMPORTING (target) and MIGRATING (source), MIGRATE of every
   * key in batches of 100 (GETKEYSINSLOT), then SETSLOT NODE on the target, the source and every other master;
   * waits until all nodes agree. `keys` is how many keys were migrated. `hooks` run inside the migration window
   * (for tests of what happens there); if one throws, the slot is left half-migrated and the error propagates.
   */
  moveSlot: (slot: number, toNodeId?: string, hooks?: MoveHooks) => Promise<{ from: ClusterNode, to: ClusterNode, keys: number }>
  /** Restart a killed node (same port, dir and nodes.conf) and wait until it has rejoined and the cluster is settled */
  restart: (port: number) => Promise<void>
  /** SIGKILL the node on `port` (by its PID) and wait for it to exit; no waiting on the cluster */
  kill: (port: number) => Promise<ClusterNode | undefined>
  /**
   * The whole cluster loses its data: SIGKILL every node (by its PID), delete its RDB and AOF files (a replica keeps
   * the RDB of its last full sync, which it would load), start every node again with its nodes.conf (same ids, roles
   * and slots) and wait until the cluster is settled.
   */
  restartEmpty: () => Promise<void>
  /** Resolves once the cluster is settled (see above), or fails after `timeoutMs` */
  waitSettled: (what?: string, timeoutMs?: number) => Promise<void>
  /** The last lines of a node's redis log (for failure messages) */
  log: (port: number, lines?: number) => string
  /** Stop every node it started (by PID). Also registered in t.after. */
  stop: () => Promise<void>
}

/** Points inside a slot migration where moveSlot waits for the test. */
export interface MoveHooks {
  /** The target is IMPORTING and the source MIGRATING the slot; no key has moved yet. */
  migrating?: (from: ClusterNode, to: ClusterNode) => Promise<void> | void
  /** Every key of the slot is on the target, but the source still owns the slot (no SETSLOT NODE sent yet). */
  keysMoved?: (from: ClusterNode, to: ClusterNode) => Promise<void> | void
}

export interface ClusterOptions {
  /** Masters (at least 3: redis-cli --cluster create refuses fewer); default 3 */
  primaries?: number
  /** default 1 */
  replicasPerPrimary?: number
  /** cluster-node-timeout; default 2000 */
  nodeTimeoutMs?: number
  /** Extra redis-server arguments for every node */
  serverArgs?: string[]
  /** Deadline of each wait (formation, failover, slot move, restart); default max(30 s, 15 × nodeTimeoutMs) */
  waitMs?: number
}

const SLOTS = 16384
const HOST = '127.0.0.1'
/** Ports that belong to the machine's own Redis (and its bus and sentinel neighbours): never used. */
const FORBIDDEN = new Set([6379, 16379, 26379])
const MIN_REDIS_MAJOR = 7

// ---------------------------------------------------------------- CRC16 / slots

const CRC_TABLE = (() => {
  const table = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let crc = i << 8
    for (let b = 0; b < 8; b++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
    table[i] = crc
  }
  return table
})()

/** CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster uses. */
export function crc16 (buf: Uint8Array, start = 0, end = buf.length): number {
  let crc = 0
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ buf[i]) & 0xff]
  return crc
}

/** The hash slot of a key, as Redis computes it (keyHashSlot): the first non-empty {…} hash tag, if any. */
export function keySlot (key: string | Uint8Array): number {
  const buf = typeof key === 'string' ? Buffer.from(key, 'utf8') : key
  const open = buf.indexOf(0x7b) // {
  if (open !== -1) {
    const close = buf.indexOf(0x7d, open + 1) // }
    if (close !== -1 && close > open + 1) return crc16(buf, open + 1, close) % SLOTS
  }
  return crc16(buf) % SLOTS
}

// ---------------------------------------------------------------- skipping

/**
 * Why the Redis Cluster tests cannot run here, or undefined when they can: they need redis-server (7.0 or newer,
 * for sharded pub/sub) and redis-cli on PATH. Under CI=true a missing tool is an error, not a skip.
 */
export function clusterSkipReason (): string | undefined {
  let reason: string | undefined
  const server = spawnSync('redis-server', ['--version'], { encoding: 'utf8' })
  const cli = spawnSync('redis-cli', ['--version'], { encoding: 'utf8' })
  if (server.status !== 0) reason = 'redis-server not found on PATH (apt-get install redis-server)'
  else if (cli.status !== 0) reason = 'redis-cli not found on PATH (apt-get install redis-tools)'
  else {
    const major = Number(/v=(\d+)\./.exec(server.stdout)?.[1] ?? 0)
    if (major < MIN_REDIS_MAJOR) reason = `redis-server ${server.stdout.trim()} is older than ${MIN_REDIS_MAJOR}.0 (sharded pub/sub)`
  }
  if (reason === undefined) return undefined
  if (process.env.CI === 'true') throw new Error(`${reason}, and CI=true: .ci/run must install it`)
  return reason + '; skipping Redis Cluster tests'
}

// ---------------------------------------------------------------- CLUSTER NODES

interface RawNode {
  id: string
  port: number
  flags: string[]
  myself: boolean
  masterId?: string
  slots: Array<[number, number]>
  /** `[slot->-id]` / `[slot-<-id]` entries (only ever on the node's own line) */
  migrating: string[]
}

function parseNodes (text: string): RawNode[] {
  const out: RawNode[] = []
  for (const line of text.split('\n')) {
    const f = line.trim().split(' ')
    if (f.length < 8) continue
    const [id, addr, flagField, master] = f
    const port = Number(/:(\d+)@/.exec(addr)?.[1] ?? 0)
    const allFlags = flagField.split(',')
    const slots: Array<[number, number]> = []
    const migrating: string[] = []
    for (const tok of f.slice(8)) {
      if (tok.startsWith('[')) { migrating.push(tok); continue }
      const [a, b] = tok.split('-').map(Number)
      slots.push([a, b ?? a])
    }
    slots.sort((x, y) => x[0] - y[0])
    out.push({
      id,
      port,
      flags: allFlags.filter((x) => x !== 'myself'),
      myself: allFlags.includes('myself'),
      masterId: master === '-' ? undefined : master,
      slots,
      migrating
    })
  }
  return out
}

function isMaster (n: RawNode | ClusterNode): boolean { return n.flags.includes('master') }
function failing (n: RawNode | ClusterNode): boolean { return n.flags.includes('fail') || n.flags.includes('fail?') }
function hasSlot (n: { slots: Array<[number, number]> }, slot: number): boolean { return n.slots.some(([a, b]) => slot >= a && slot <= b) }
function slotText (slots: Array<[number, number]>): string { return slots.map(([a, b]) => a === b ? `${a}` : `${a}-${b}`).join(' ') }

// ---------------------------------------------------------------- processes

interface Managed {
  port: number
  dir: string
  args: string[]
  proc?: ChildProcess
  pid: number
  stderr: string
}

/** PIDs still running, killed if the test process exits without stopping them (a crash, a timeout). */
const running = new Set<number>()
const dirsToRemove = new Set<string>()
let exitHookInstalled = false
function killEverything (): void {
  for (const pid of running) { try { process.kill(pid, 'SIGKILL') } catch {} }
  running.clear()
  for (const dir of dirsToRemove) { try { rmSync(dir, { recursive: true, force: true }) } catch {} }
  dirsToRemove.clear()
}
function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', killEverything)
  // An interrupted test process (Ctrl-C, a runner's SIGTERM) does not emit 'exit': stop the nodes, then let the
  // signal do what it would have done — unless someone else listens for it and decides.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killEverything()
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }
}

function alive (m: Managed): boolean { return m.proc !== undefined && m.proc.exitCode === null && m.proc.signalCode === null }

async function killManaged (m: Managed, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const proc = m.proc
  if (proc === undefined || !alive(m)) return
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  process.kill(m.pid, signal)
  let timer: NodeJS.Timeout | undefined
  await Promise.race([exited, new Promise<void>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`redis-server ${m.port} (pid ${m.pid}) did not exit within 10 s of ${signal}`)), 10_000)
  })]).finally(() => clearTimeout(timer))
}

async function sleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function canListen (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)))
  })
}

/** Ports this process has handed out (so two clusters of one test file never pick the same). */
const reserved = new Set<number>()

function ephemeralLow (): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768
  } catch {
    return 32768
  }
}

/** A port p with p and p + 10000 both free: below the ephemeral range when there is room, else any. */
async function pickPort (): Promise<number> {
  const low = 10_000
  const high = Math.min(ephemeralLow(), 65_536) - 10_000 - 1 // p + 10000 stays below the ephemeral range
  for (let attempt = 0; attempt < 500; attempt++) {
    const p = high - low >= 1000
      ? low + Math.floor(Math.random() * (high - low))
      : 1024 + Math.floor(Math.random() * (65_535 - 10_000 - 1024))
    if (reserved.has(p) || reserved.has(p + 10_000) || FORBIDDEN.has(p) || FORBIDDEN.has(p + 10_000)) continue
    if (!(await canListen(p)) || !(await canListen(p + 10_000))) continue
    reserved.add(p)
    reserved.add(p + 10_000)
    return p
  }
  throw new Error('no free port pair (p, p + 10000) found for a Redis Cluster node')
}

// ---------------------------------------------------------------- connections

const connOptions = (port: number): RedisOptions => ({
  host: HOST,
  port,
  lazyConnect: true,
  connectTimeout: 3000,
  commandTimeout: 15_000,
  retryStrategy: () => null,
  maxRetriesPerRequest: 0,
  enableOfflineQueue: false,
  enableReadyCheck: false,
  autoResubscribe: false,
  connectionName: 'herald-cluster-harness'
})

interface View {
  port: number
  info: Record<string, string>
  repl: Record<string, string>
  nodes: RawNode[]
}

function parseInfo (text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\r\n').join('\n').split('\n')) {
    const at = line.indexOf(':')
    if (at > 0 && !line.startsWith('#')) out[line.slice(0, at)] = line.slice(at + 1).trim()
  }
  return out
}

// ---------------------------------------------------------------- the harness

/**
 * Starts a Redis Cluster of private redis-servers (see the top of this file) and stops it when the test ends.
 * Typical start on 2 busy cores: a few seconds.
 */
export async function startRedisCluster (t: TestContext, opts: ClusterOptions = {}): Promise<RedisCluster> {
  const primaries = opts.primaries ?? 3
  const replicasPerPrimary = opts.replicasPerPrimary ?? 1
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 2000
  const waitMs = opts.waitMs ?? Math.max(30_000, nodeTimeoutMs * 15)
  if (primaries < 3) throw new Error('a Redis Cluster needs at least 3 primaries (redis-cli --cluster create)')
  const total = primaries * (1 + replicasPerPrimary)
  installExitHook()

  const root = mkdtempSync(join(tmpdir(), 'herald-rcluster-'))
  dirsToRemove.add(root)
  const managed: Managed[] = []
  const byPort = new Map<number, Managed>()
  const conns = new Map<number, Redis>()
  let stopped = false

  // ------------------------------------------------ connections to single nodes (no redirects followed)

  async function conn (port: number): Promise<Redis> {
    const existing = conns.get(port)
    if (existing !== undefined && existing.status === 'ready') return existing
    if (existing !== undefined) { conns.delete(port); existing.disconnect() }
    const c = new Redis(connOptions(port))
    c.on('error', () => {})
    conns.set(port, c)
    try {
      await c.connect()
    } catch (err) {
      conns.delete(port)
      c.disconnect()
      throw new Error(`cannot connect to cluster node ${port}: ${(err as Error).message}`)
    }
    return c
  }

  async function call (port: number, ...args: Array<string | number | Buffer>): Promise<unknown> {
    const c = await conn(port)
    return await c.call(String(args[0]), ...args.slice(1))
  }

  async function view (port: number): Promise<View> {
    const c = await conn(port)
    const [info, nodes, repl] = await Promise.all([
      c.call('CLUSTER', 'INFO') as Promise<string>,
      c.call('CLUSTER', 'NODES') as Promise<string>,
      c.call('INFO', 'replication') as Promise<string>
    ])
    return { port, info: parseInfo(info), repl: parseInfo(repl), nodes: parseNodes(nodes) }
  }

  // ------------------------------------------------ processes

  function launch (m: Managed): void {
    const proc = spawn('redis-server', m.args, { cwd: m.dir, stdio: ['ignore', 'ignore', 'pipe'] })
    m.proc = proc
    m.pid = proc.pid ?? 0
    m.stderr = ''
    proc.stderr!.on('data', (d: Buffer) => { if (m.stderr.length < 8192) m.stderr += d.toString() })
    if (m.pid !== 0) running.add(m.pid)
    const pid = m.pid
    proc.once('exit', () => { running.delete(pid) })
  }

  /** Waits until the node answers PING; throws (with its log) if it exits first. */
  async function waitPing (m: Managed, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (!alive(m)) throw Object.assign(new Error(`redis-server on ${m.port} exited (${String(m.proc?.exitCode ?? m.proc?.signalCode)}) while starting: ${m.stderr.trim()} ${tail(m.port, 5)}`), { port: m.port })
      try {
        if (await call(m.port, 'PING') === 'PONG') return
      } catch {}
      if (Date.now() > deadline) throw new Error(`redis-server on ${m.port} did not answer PING within ${timeoutMs} ms; log: ${tail(m.port, 10)}`)
      await sleep(50)
    }
  }

  function argsFor (port: number, dir: string): string[] {
    return [
      '--port', String(port),
      '--bind', HOST,
      '--cluster-enabled', 'yes',
      '--cluster-config-file', join(dir, `nodes-${port}.conf`),
      '--cluster-node-timeout', String(nodeTimeoutMs),
      '--save', '',
      '--appendonly', 'no',
      // A replica's full sync starts at once (7.0 waits 5 s by default for more replicas).
      '--repl-diskless-sync-delay', '0',
      '--enable-debug-command', 'local',
      '--dir', dir,
      '--logfile', join(dir, 'redis.log'),
      '--loglevel', 'notice',
      '--daemonize', 'no',
      ...(opts.serverArgs ?? [])
    ]
  }

  /** Starts one new node on a fresh port pair, retrying with another pair if the port was taken meanwhile. */
  async function startNode (): Promise<Managed> {
    let lastErr: unknown
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await pickPort()
      const dir = join(root, String(port))
      mkdirSync(dir, { recursive: true })
      const m: Managed = { port, dir, args: argsFor(port, dir), pid: 0, stderr: '' }
      launch(m)
      try {
        await waitPing(m)
        return m
      } catch (err) {
        lastErr = err
        await killManaged(m).catch(() => {})
        rmSync(dir, { recursive: true, force: true })
        if (!/in use|bind/i.test(`${(err as Error).message}`)) throw err
      }
    }
    throw lastErr
  }

  function tail (port: number, lines = 20): string {
    const m = byPort.get(port)
    try {
      const text = readFileSync(join(m?.dir ?? join(root, String(port)), 'redis.log'), 'utf8')
      return text.trimEnd().split('\n').slice(-lines).join('\n')
    } catch {
      return '(no log)'
    }
  }

  function managedAt (port: number): Managed {
    const m = byPort.get(port)
    if (m === undefined) throw new Error(`port ${port} is not a node of this cluster (${[...byPort.keys()].join(', ')})`)
    return m
  }

  // ------------------------------------------------ state

  function toNode (raw: RawNode): ClusterNode {
    const m = byPort.get(raw.port)
    return {
      port: raw.port,
      pid: m?.pid ?? 0,
      id: raw.id,
      role: isMaster(raw) ? 'master' : 'slave',
      ...(raw.masterId !== undefined ? { masterId: raw.masterId } : {}),
      slots: raw.slots,
      flags: raw.flags,
      alive: m !== undefined && alive(m)
    }
  }

  async function nodes (): Promise<ClusterNode[]> {
    const errors: string[] = []
    for (const m of managed) {
      if (!alive(m)) continue
      try {
        const text = await call(m.port, 'CLUSTER', 'NODES') as string
        return parseNodes(text).map(toNode).sort((a, b) => a.port - b.port)
      } catch (err) {
        errors.push(`${m.port}: ${(err as Error).message}`)
      }
    }
    throw new Error('no live cluster node answered CLUSTER NODES' + (errors.length > 0 ? ': ' + errors.join('; ') : ''))
  }

  function checkSlot (slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= SLOTS) throw new Error(`not a hash slot: ${slot}`)
  }

  async function masterOf (slot: number): Promise<ClusterNode> {
    checkSlot(slot)
    const list = await nodes()
    const owner = list.find((n) => n.role === 'master' && hasSlot(n, slot))
    if (owner === undefined) throw new Error(`no master serves slot ${slot}: ${JSON.stringify(list)}`)
    return owner
  }

  /**
   * Why the cluster is not settled now (see the top of the file), or undefined when it is; `extra` adds a
   * condition on the agreed views.
   */
  async function unsettled (extra?: (views: View[]) => string | undefined): Promise<string | undefined> {
    const live = managed.filter(alive)
    if (live.length === 0) return 'no node is running'
    let views: View[]
    try {
      views = await Promise.all(live.map(async (m) => await view(m.port)))
    } catch (err) {
      return (err as Error).message
    }
    const livePorts = new Set(live.map((m) => m.port))
    let reference: string | undefined
    for (const v of views) {
      if (v.info.cluster_state !== 'ok') return `node ${v.port}: cluster_state:${v.info.cluster_state}`
      if (v.nodes.length !== managed.length) return `node ${v.port} knows ${v.nodes.length} nodes of ${managed.length}`
      for (const n of v.nodes) {
        if (n.flags.includes('handshake') || n.flags.includes('noaddr')) return `node ${v.port} sees ${n.port} as ${n.flags.join(',')}`
        if (livePorts.has(n.port) && failing(n)) return `node ${v.port} flags live node ${n.port} ${n.flags.join(',')}`
        if (n.migrating.length > 0) return `node ${v.port} has slots in migration: ${n.migrating.join(' ')}`
      }
      const self = v.nodes.find((n) => n.myself)
      if (self?.port !== v.port) return `node ${v.port} does not list itself`
      if (!isMaster(self) && self.masterId !== undefined) {
        const master = v.nodes.find((n) => n.id === self.masterId)
        if (master !== undefined && livePorts.has(master.port) && v.repl.master_link_status !== 'up') {
          return `replica ${v.port}: master_link_status:${v.repl.master_link_status ?? '?'}`
        }
      }
      const signature = v.nodes
        .map((n) => `${n.port}=${n.id}:${isMaster(n) ? 'master' : 'slave'}:${n.masterId ?? '-'}:${slotText(n.slots)}`)
        .sort()
        .join(' | ')
      if (reference === undefined) reference = signature
      else if (signature !== reference) return `nodes ${views[0].port} and ${v.port} disagree:\n  ${reference}\n  ${signature}`
    }
    const owners = new Array<number>(SLOTS).fill(0)
    for (const n of views[0].nodes) if (isMaster(n)) for (const [a, b] of n.slots) for (let s = a; s <= b; s++) owners[s]++
    const badSlot = owners.findIndex((c) => c !== 1)
    if (badSlot !== -1) return `slot ${badSlot} has ${owners[badSlot]} owners`
    return extra?.(views)
  }

  async function waitSettled (what = 'settled cluster', timeoutMs = waitMs, extra?: (views: View[]) => string | undefined): Promise<void> {
    const deadline = Date.now() + timeoutMs
    let why: string | undefined = 'not checked'
    for (;;) {
      if (stopped) throw new Error(`Redis cluster stopped while waiting for: ${what}`)
      why = await unsettled(extra)
      if (why === undefined) return
      if (Date.now() > deadline) break
      await sleep(100)
    }
    const logs = managed.map((m) => `--- ${m.port} (${alive(m) ? 'pid ' + m.pid : 'down'}):\n${tail(m.port, 6)}`).join('\n')
    throw new Error(`Redis cluster: ${what} not reached within ${timeoutMs} ms; last: ${why}\n${logs}`)
  }

  /** The owner of `slot` in one view, or undefined. */
  function ownerIn (v: View, slot: number): RawNode | undefined { return v.nodes.find((n) => isMaster(n) && hasSlot(n, slot)) }

  // ------------------------------------------------ operations

  function cli (port: number, ...args: string[]): string {
    managedAt(port)
    const res = spawnSync('redis-cli', ['-e', '-h', HOST, '-p', String(port), ...args], { encoding: 'utf8', timeout: 15_000 })
    if (res.error !== undefined) throw new Error(`redis-cli -p ${port} ${args.join(' ')}: ${res.error.message}`)
    if (res.status !== 0) throw new Error(`redis-cli -p ${port} ${args.join(' ')} exited ${String(res.status ?? res.signal)}: ${(res.stdout + res.stderr).trim()}`)
    return res.stdout
  }

  async function kill (port: number): Promise<ClusterNode | undefined> {
    const m = managedAt(port)
    let before: ClusterNode | undefined
    try { before = (await nodes()).find((n) => n.port === port) } catch {}
    await killManaged(m, 'SIGKILL')
    conns.get(port)?.disconnect()
    conns.delete(port)
    return before
  }

  async function failover (slot: number): Promise<{ killed: ClusterNode, promoted: ClusterNode }> {
    checkSlot(slot)
    const list = await nodes()
    const killed = list.find((n) => n.role === 'master' && hasSlot(n, slot))
    if (killed === undefined) throw new Error(`no master serves slot ${slot}`)
    if (!killed.alive) throw new Error(`the master of slot ${slot} (${killed.port}) is not running`)
    const replicas = list.filter((n) => n.masterId === killed.id && n.alive && !failing(n))
    if (replicas.length === 0) throw new Error(`the master of slot ${slot} (${killed.port}) has no live replica to promote`)
    const replicaIds = new Set(replicas.map((n) => n.id))
    await kill(killed.port)
    await waitSettled(`failover of slot ${slot} from ${killed.port}`, waitMs, (views) => {
      for (const v of views) {
        const owner = ownerIn(v, slot)
        if (owner === undefined || !replicaIds.has(owner.id)) return `node ${v.port} sees slot ${slot} on ${owner?.port ?? 'nobody'}`
        const dead = v.nodes.find((n) => n.id === killed.id)
        if (dead !== undefined && !dead.flags.includes('fail')) return `node ${v.port} does not flag ${killed.port} fail yet (${dead.flags.join(',')})`
      }
      return undefined
    })
    const promoted = await masterOf(slot)
    return { killed, promoted }
  }

  async function moveSlot (slot: number, toNodeId?: string, hooks: MoveHooks = {}): Promise<{ from: ClusterNode, to: ClusterNode, keys: number }> {
    checkSlot(slot)
    const list = await nodes()
    const from = list.find((n) => n.role === 'master' && hasSlot(n, slot))
    if (from === undefined) throw new Error(`no master serves slot ${slot}`)
    if (!from.alive) throw new Error(`the master of slot ${slot} (${from.port}) is not running`)
    const candidates = list.filter((n) => n.role === 'master' && n.alive && !failing(n) && n.id !== from.id)
    const to = toNodeId === undefined ? candidates[0] : candidates.find((n) => n.id === toNodeId)
    if (to === undefined) {
      throw new Error(toNodeId === undefined ? 'no other live master to move the slot to' : `${toNodeId} is not a live master other than the slot's owner ${from.id}`)
    }
    // The order of redis-cli's clusterManagerMoveSlot (7.0).
    await call(to.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id)
    await call(from.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id)
    await hooks.migrating?.(from, to)
    const source = await conn(from.port)
    let moved = 0
    for (;;) {
      const keys = await source.callBuffer('CLUSTER', 'GETKEYSINSLOT', slot, 100) as Buffer[]
      if (keys.length === 0) break
      try {
        await source.call('MIGRATE', HOST, to.port, '', 0, 10_000, 'KEYS', ...keys)
      } catch (err) {
        throw new Error(`MIGRATE of ${keys.length} keys of slot ${slot} from ${from.port} to ${to.port} failed: ${(err as Error).message}`)
      }
      moved += keys.length
    }
    await hooks.keysMoved?.(from, to)
    // The target first (it bumps its epoch and propagates), then the source, then every other master.
    await call(to.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    try {
      await call(from.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    } catch (err) {
      // The source gave away its last slot and turned into a replica already (redis-cli accepts this too).
      if (!/Please use SETSLOT only with masters/.test((err as Error).message)) throw err
    }
    for (const n of list) {
      if (n.role !== 'master' || !n.alive || n.id === from.id || n.id === to.id) continue
      await call(n.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    }
    await waitSettled(`slot ${slot} moving from ${from.port} to ${to.port}`, waitMs, (views) => {
      for (const v of views) {
        const owner = ownerIn(v, slot)
        if (owner?.id !== to.id) return `node ${v.port} sees slot ${slot} on ${owner?.port ?? 'nobody'}`
      }
      return undefined
    })
    const after = await nodes()
    return { from: after.find((n) => n.id === from.id) ?? from, to: after.find((n) => n.id === to.id) ?? to, keys: moved }
  }

  async function restart (port: number): Promise<void> {
    const m = managedAt(port)
    if (alive(m)) throw new Error(`node ${port} is still running (pid ${m.pid}); kill it first`)
    launch(m)
    await waitPing(m)
    await waitSettled(`node ${port} rejoining`, waitMs)
  }

  async function restartEmpty (): Promise<void> {
    await Promise.all(managed.map(async (m) => await killManaged(m, 'SIGKILL')))
    for (const c of conns.values()) c.disconnect()
    conns.clear()
    const data = (m: Managed): string[] => readdirSync(m.dir).filter((name) => /\.rdb$|^appendonly/.test(name))
    for (const m of managed) for (const name of data(m)) rmSync(join(m.dir, name), { recursive: true, force: true })
    for (const m of managed) if (data(m).length > 0) throw new Error(`node ${m.port}: could not delete ${data(m).join(', ')}`)
    for (const m of managed) launch(m)
    await Promise.all(managed.map(async (m) => await waitPing(m)))
    await waitSettled('every node restarted empty', waitMs)
  }

  async function stop (): Promise<void> {
    if (stopped) return
    stopped = true
    for (const c of conns.values()) c.disconnect()
    conns.clear()
    await Promise.allSettled(managed.map(async (m) => await killManaged(m, 'SIGKILL')))
    rmSync(root, { recursive: true, force: true })
    dirsToRemove.delete(root)
    for (const m of managed) { reserved.delete(m.port); reserved.delete(m.port + 10_000) }
  }

  t.after(stop)

  // ------------------------------------------------ formation

  const started = await Promise.allSettled(Array.from({ length: total }, async () => await startNode()))
  for (const r of started) {
    if (r.status === 'fulfilled') { managed.push(r.value); byPort.set(r.value.port, r.value) }
  }
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) { await stop(); throw failed.reason }

  const ports = managed.map((m) => m.port)
  const create = await new Promise<{ code: number | null, out: string }>((resolve) => {
    execFile('redis-cli', ['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', String(replicasPerPrimary), '--cluster-yes'],
      { encoding: 'utf8', timeout: waitMs, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), out: stdout + stderr }))
  })
  if (create.code !== 0) {
    await stop()
    throw new Error(`redis-cli --cluster create failed (${String(create.code)}):\n${create.out}`)
  }
  try {
    await waitSettled('cluster formation', waitMs, (views) => {
      const masters = views[0].nodes.filter((n) => isMaster(n) && n.slots.length > 0).length
      const slaves = views[0].nodes.filter((n) => !isMaster(n)).length
      if (masters !== primaries || slaves !== total - primaries) return `${masters} masters with slots and ${slaves} replicas so far`
      return undefined
    })
  } catch (err) {
    await stop()
    throw err
  }

  return {
    seeds: ports.map((p) => `${HOST}:${p}`).join(','),
    ports,
    nodes,
    slotOf: keySlot,
    masterOf,
    cli,
    failover,
    moveSlot,
    restart,
    kill,
    restartEmpty,
    waitSettled: async (what, timeoutMs) => { await waitSettled(what, timeoutMs) },
    log: tail,
    stop
  }
}

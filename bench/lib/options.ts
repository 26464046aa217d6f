import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'

/** Which server protocol the generator speaks. */
export type PeerProtocol = 'herald' | 'socketio' | 'bare'
export type Transport = 'ws' | 'sse' | 'poll'

export interface LoadOptions {
  /** Base URLs (http://host:port) of the nodes; connections and REST publishes go round robin. */
  targets: string[]
  protocol: PeerProtocol
  connections: number
  rooms: number
  /** Channels each connection subscribes to (distinct, consecutive rooms). */
  subsPerConn: number
  /** Percentages of connections per transport (sse and poll: Herald only). */
  mix: Record<Transport, number>
  /** Events per second published in total (0: idle). */
  rate: number
  publishVia: 'rest' | 'ws'
  /** Size in bytes of each event's `data`. */
  payload: number
  /** Seconds of measured publishing. */
  duration: number
  /** Seconds of publishing before the measurement starts (not counted in latency). */
  warmup: number
  /** Seconds over which connections are opened (0: as fast as the in-flight bound allows). */
  ramp: number
  /** Most connection handshakes in flight per worker. */
  maxPending: number
  secret?: string
  tokens?: string[]
  /** Worker processes holding the connections; 0 runs them in this process. */
  workers: number
  /** Local addresses the connections are spread over (loopback targets only). */
  sourceAddrs: string[]
  /**
   * Local ports [first, last] the generator assigns itself with the source addresses (below the kernel's
   * ephemeral range, so they do not collide with it), or null to let the kernel pick. Binding to a given port is
   * O(1); asking the kernel for "any port" on a bound address scans the range and slows down as it fills.
   */
  localPorts: [number, number] | null
  /** Seconds to wait, after publishing stops, for the last events. */
  drainTimeout: number
  /** Seconds one connection may take to connect and subscribe. */
  connectTimeout: number
  /** Long-poll `timeout` parameter (seconds). */
  pollTimeout: number
  /** PID of the server, for CPU and RSS from /proc (otherwise from its /metrics). */
  serverPid?: number
  /** Other PIDs (e.g. redis-server) whose CPU is reported alongside. */
  extraPids: Array<{ name: string, pid: number }>
  /** Hosts other than loopback the user explicitly allows. */
  allowHosts: string[]
  channelPrefix: string
  /** Publishing connections (WebSocket publishing) or keep-alive sockets (REST). */
  publishers: number
  json: boolean
  progress: 'auto' | 'tty' | 'plain' | 'off'
  /** Hard cap on the whole run (seconds). */
  maxSeconds: number
}

export class UsageError extends Error {}

export const USAGE = `usage: npm run loadtest -- [options]
   or: herald-loadtest [options]

Target
  --url URL            node to load (repeat, or comma list: round robin)    [http://127.0.0.1:3000]
  --protocol P         herald | socketio | bare (bench peers)                [herald]
  --allow-host HOST    permit a non-loopback target host (repeatable); loopback only otherwise
  --secret S           HS256 secret to mint tokens (default: JWT_SECRET, then .herald/dev-secret)
  --token-file F       tokens to use instead, one per line (round robin)
  --server-pid PID     read the server's CPU and RSS from /proc/PID (else from its /metrics)

Scenario
  -c, --connections N  connections                                           [100]
  -r, --rooms N        channels (bench:room-0 …)                             [10]
  --subs N             subscriptions per connection                          [1]
  --mix ws,sse,poll    transport percentages, e.g. 50,40,10                  [100,0,0]
  --rate N             events published per second in total (0 = idle)       [100]
  --publish-via M      rest | ws                                             [rest]
  --payload BYTES      size of each event's data                             [128]
  -d, --duration S     seconds measured                                      [10]
  --warmup S           seconds of publishing before measuring                [1]
  --ramp S             seconds to open all connections (0 = at once)         [connections/2000]
  --max-pending N      handshakes in flight per worker                       [512]

Generator
  --workers N          worker processes holding connections (0 = in-process) [auto]
  --source-addrs N|A,B spread connections over N loopback sources 127.0.0.2… or the given addresses [auto]
  --local-ports A-B    local ports to assign with those sources, or "kernel" to let the kernel pick [20000-32767]
  --publishers N       publishing sockets                                    [auto]
  --drain S            seconds to wait for the last events                   [5]
  --connect-timeout S  per connection                                        [20]
  --poll-timeout S     long-poll timeout parameter                           [10]
  --max-seconds S      hard cap on the whole run                             [auto]

Output
  --json               print the summary as JSON on stdout (progress on stderr)
  --progress MODE      auto | tty | plain | off                              [auto]
  -h, --help
`

const LOOPBACK_NAMES = new Set(['localhost', 'ip6-localhost', 'ip6-loopback'])

/** Loopback: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost (host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (LOOPBACK_NAMES.has(h)) return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h)
  return false
}

/** Normalises a target to http(s)://host:port and refuses non-loopback hosts not named by --allow-host. */
export function checkTarget (raw: string, allowHosts: string[]): string {
  let url: URL
  try {
    url = new URL(/^[a-z]+:\/\//i.test(raw) ? raw : 'http://' + raw)
  } catch {
    throw new UsageError(`bad --url ${JSON.stringify(raw)}`)
  }
  if (url.protocol === 'ws:') url.protocol = 'http:'
  if (url.protocol === 'wss:') url.protocol = 'https:'
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--url must be http(s):// or ws(s):// (got ${url.protocol})`)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (!isLoopbackHost(host) && !allowHosts.map((h) => h.toLowerCase()).includes(host.toLowerCase())) {
    throw new UsageError(`refusing target ${url.host}: not loopback (127.0.0.0/8, ::1, localhost). Name it with --allow-host ${host} if you really mean to load it.`)
  }
  // localhost → 127.0.0.1, so that connections can be spread over 127.0.0.x source addresses.
  if (host.toLowerCase() === 'localhost') url.hostname = '127.0.0.1'
  return url.origin + url.pathname.replace(/\/+$/, '')
}

export function defaults (): LoadOptions {
  return {
    targets: ['http://127.0.0.1:3000'],
    protocol: 'herald',
    connections: 100,
    rooms: 10,
    subsPerConn: 1,
    mix: { ws: 100, sse: 0, poll: 0 },
    rate: 100,
    publishVia: 'rest',
    payload: 128,
    duration: 10,
    warmup: 1,
    ramp: -1,
    maxPending: 512,
    workers: -1,
    sourceAddrs: [],
    localPorts: [20000, 32767],
    drainTimeout: 5,
    connectTimeout: 20,
    pollTimeout: 10,
    extraPids: [],
    allowHosts: [],
    channelPrefix: 'bench:room-',
    publishers: 0,
    json: false,
    progress: 'auto',
    maxSeconds: 0
  }
}

/** Fills the `auto` settings and checks everything; throws UsageError. */
export function resolveOptions (partial: Partial<LoadOptions>): LoadOptions {
  const o: LoadOptions = { ...defaults(), ...partial }
  const int = (name: string, v: number, min: number, max: number): void => {
    if (!Number.isInteger(v) || v < min || v > max) throw new UsageError(`${name} must be an integer in [${min}, ${max}] (got ${v})`)
  }
  const num = (name: string, v: number, min: number, max: number): void => {
    if (!Number.isFinite(v) || v < min || v > max) throw new UsageError(`${name} must be a number in [${min}, ${max}] (got ${v})`)
  }
  if (o.targets.length === 0) throw new UsageError('at least one --url is needed')
  o.targets = o.targets.map((t) => checkTarget(t, o.allowHosts))
  if (o.targets.some((t) => t.startsWith('https:'))) throw new UsageError('https/wss targets are not supported (the generator\'s WebSocket client speaks plain TCP)')
  int('--connections', o.connections, 1, 1_000_000)
  int('--rooms', o.rooms, 1, 1_000_000)
  int('--subs', o.subsPerConn, 1, 1000)
  if (o.subsPerConn > o.rooms) throw new UsageError('--subs cannot exceed --rooms (each connection subscribes to distinct rooms)')
  num('--rate', o.rate, 0, 10_000_000)
  int('--payload', o.payload, 0, 16 * 1024 * 1024)
  num('--duration', o.duration, 0, 24 * 3600)
  num('--warmup', o.warmup, 0, 3600)
  num('--drain', o.drainTimeout, 0, 600)
  num('--connect-timeout', o.connectTimeout, 0.1, 600)
  num('--poll-timeout', o.pollTimeout, 0, 120)
  int('--max-pending', o.maxPending, 1, 10_000_000)
  const total = o.mix.ws + o.mix.sse + o.mix.poll
  if (![o.mix.ws, o.mix.sse, o.mix.poll].every((p) => Number.isFinite(p) && p >= 0) || Math.abs(total - 100) > 1e-9) throw new UsageError('--mix must be three percentages adding up to 100 (ws,sse,poll)')
  if (o.protocol !== 'herald' && (o.mix.sse > 0 || o.mix.poll > 0)) throw new UsageError(`the ${o.protocol} peer has WebSocket only: --mix must be 100,0,0`)
  if (!['herald', 'socketio', 'bare'].includes(o.protocol)) throw new UsageError('--protocol must be herald, socketio or bare')
  if (o.publishVia !== 'rest' && o.publishVia !== 'ws') throw new UsageError('--publish-via must be rest or ws')
  if (o.ramp < 0) o.ramp = o.connections >= 2000 ? o.connections / 2000 : 0
  num('--ramp', o.ramp, 0, 3600)
  if (o.workers < 0) o.workers = o.connections <= 1000 ? 1 : Math.max(2, Math.ceil(o.connections / 12_000))
  int('--workers', o.workers, 0, 64)
  if (o.publishers <= 0) o.publishers = o.publishVia === 'ws' ? Math.min(200, Math.max(1, Math.ceil(o.rate / 40))) : Math.min(64, Math.max(8, Math.ceil(o.rate / 50)))
  int('--publishers', o.publishers, 1, 10_000)
  if (o.localPorts !== null) {
    const [a, b] = o.localPorts
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 1024 || b > 65535 || b - a < 100) throw new UsageError('--local-ports must be A-B with 1024 ≤ A, B ≤ 65535 and at least 100 ports')
  }
  if (o.sourceAddrs.length === 0) o.sourceAddrs = autoSourceAddrs(o)
  if (o.localPorts !== null && o.sourceAddrs.length > 0) {
    const perAddr = Math.ceil(o.connections / o.sourceAddrs.length)
    const size = o.localPorts[1] - o.localPorts[0] + 1
    if (perAddr > size) throw new UsageError(`${perAddr} connections per source address do not fit in --local-ports (${size} ports): add --source-addrs`)
  }
  if (o.maxSeconds <= 0) o.maxSeconds = Math.ceil(o.ramp + o.connectTimeout + o.warmup + o.duration + o.drainTimeout + 60)
  if (o.protocol === 'herald' && o.tokens === undefined && o.secret === undefined) {
    throw new UsageError('Herald needs tokens: pass --secret (or set JWT_SECRET) or --token-file; with `npm start` in development, .herald/dev-secret is used when present')
  }
  return o
}

/**
 * 127.0.0.2, 127.0.0.3 … as many as the connections need (one per 90% of the local port range, or per 10,000
 * when the kernel picks ports), when every target is an IPv4 loopback address.
 */
function autoSourceAddrs (o: LoadOptions): string[] {
  const allV4Loopback = o.targets.every((t) => { const h = new URL(t).hostname; return isIP(h) === 4 && h.startsWith('127.') })
  if (!allV4Loopback) return []
  const perAddr = o.localPorts === null ? 10_000 : Math.floor((o.localPorts[1] - o.localPorts[0] + 1) * 0.9)
  const n = Math.min(250, Math.max(1, Math.ceil(o.connections / perAddr)))
  return Array.from({ length: n }, (_, i) => `127.0.0.${i + 2}`)
}

/** Parses the command line (`argv` without node and script). */
export function parseCli (argv: string[], env: Record<string, string | undefined> = process.env): { options: Partial<LoadOptions>, help: boolean } {
  const o: Partial<LoadOptions> = {}
  const targets: string[] = []
  const allow: string[] = []
  let help = false
  let tokenFile: string | undefined
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value: string | undefined
    const eq = arg.indexOf('=')
    if (arg.startsWith('--') && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq) }
    const next = (): string => {
      if (value !== undefined) return value
      const v = argv[++i]
      if (v === undefined) throw new UsageError(`${arg} needs a value`)
      return v
    }
    const n = (): number => {
      const raw = next()
      const v = Number(raw)
      if (raw.trim() === '' || Number.isNaN(v)) throw new UsageError(`${arg} needs a number (got ${JSON.stringify(raw)})`)
      return v
    }
    switch (arg) {
      case '-h': case '--help': help = true; break
      case '--url': case '--target': targets.push(...next().split(',').map((s) => s.trim()).filter(Boolean)); break
      case '--protocol': o.protocol = next() as PeerProtocol; break
      case '--allow-host': allow.push(...next().split(',').map((s) => s.trim()).filter(Boolean)); break
      case '--secret': o.secret = next(); break
      case '--token-file': tokenFile = next(); break
      case '--server-pid': o.serverPid = n(); break
      case '-c': case '--connections': o.connections = n(); break
      case '-r': case '--rooms': o.rooms = n(); break
      case '--subs': o.subsPerConn = n(); break
      case '--mix': {
        const parts = next().split(',').map((s) => Number(s.trim()))
        if (parts.length !== 3 || parts.some((p) => Number.isNaN(p))) throw new UsageError('--mix takes ws,sse,poll percentages, e.g. 50,40,10')
        o.mix = { ws: parts[0], sse: parts[1], poll: parts[2] }
        break
      }
      case '--rate': o.rate = n(); break
      case '--publish-via': o.publishVia = next() as 'rest' | 'ws'; break
      case '--payload': o.payload = n(); break
      case '-d': case '--duration': o.duration = n(); break
      case '--warmup': o.warmup = n(); break
      case '--ramp': o.ramp = n(); break
      case '--max-pending': o.maxPending = n(); break
      case '--workers': o.workers = n(); break
      case '--source-addrs': {
        const v = next()
        if (/^\d+$/.test(v)) o.sourceAddrs = Array.from({ length: Math.min(250, Number(v)) }, (_, k) => `127.0.0.${k + 2}`)
        else o.sourceAddrs = v.split(',').map((s) => s.trim()).filter(Boolean)
        break
      }
      case '--local-ports': {
        const v = next()
        if (v === 'kernel') { o.localPorts = null; break }
        const m = /^(\d+)-(\d+)$/.exec(v)
        if (m === null) throw new UsageError('--local-ports takes A-B (e.g. 20000-32767) or "kernel"')
        o.localPorts = [Number(m[1]), Number(m[2])]
        break
      }
      case '--publishers': o.publishers = n(); break
      case '--drain': o.drainTimeout = n(); break
      case '--connect-timeout': o.connectTimeout = n(); break
      case '--poll-timeout': o.pollTimeout = n(); break
      case '--max-seconds': o.maxSeconds = n(); break
      case '--json': o.json = true; break
      case '--progress': o.progress = next() as LoadOptions['progress']; break
      default: throw new UsageError(`unknown option ${arg}`)
    }
  }
  if (targets.length > 0) o.targets = targets
  if (allow.length > 0) o.allowHosts = allow
  if (tokenFile !== undefined) {
    const tokens = readFileSync(tokenFile, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    if (tokens.length === 0) throw new UsageError(`--token-file ${tokenFile} holds no token`)
    o.tokens = tokens
  }
  if (o.secret === undefined && o.tokens === undefined && env.JWT_SECRET !== undefined && env.JWT_SECRET !== '') o.secret = env.JWT_SECRET
  return { options: o, help }
}

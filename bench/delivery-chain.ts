/**
 * The JavaScript cost of a delivery, without the socket: the embedded bus hands a publication to the hub, the hub's
 * dispatch loop reaches each subscribed session, the session its outbox, the outbox the WebSocket transport, which
 * gathers the frame and writes it at the end of the turn — every one of them Herald's own code, only the last step,
 * the TCP socket's `write`, counts bytes instead of making a syscall. 10,000 sessions over 100 channels by default,
 * each with its own objects, so the walk over them reaches memory the way a server's does.
 *
 * End to end (`npm run bench`, scenario 8), the write syscall is two thirds of a delivery and a shared machine moves
 * the figure by 10–20% from one run to the next: a change of a few percent to the JavaScript around it cannot be
 * seen there. Here it can: CPU per delivery of that path alone, repeated, with the least and the median of the repeats.
 *
 *   npx tsx bench/delivery-chain.ts [--root DIR[,DIR2…]] [--sessions 10000] [--channels 100] [--rounds 100] [--repeat 15]
 *
 * --root: the checkouts whose src/ is measured (default this one). With two (`--root /tmp/before-worktree,.`), both
 * are loaded in this one process, each with its own sessions, and their repeats take turns: an A/B of a change,
 * compared repeat by repeat. Figures are µs of CPU per delivery (the process's user + system time).
 */
import { resolve, dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { EventEmitter } from 'node:events'

interface Args { roots: string[], sessions: number, channels: number, rounds: number, repeat: number }

function parseArgs (argv: string[]): Args {
  const a: Args = { roots: [resolve(dirname(fileURLToPath(import.meta.url)), '..')], sessions: 10_000, channels: 100, rounds: 100, repeat: 15 }
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i]
    const value = argv[++i]
    if (value === undefined) throw new Error(`${key} needs a value`)
    if (key === '--root') { a.roots = value.split(',').map((r) => resolve(r)); continue }
    const n = Number(value)
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${key} needs a positive integer`)
    if (key === '--sessions') a.sessions = n
    else if (key === '--channels') a.channels = n
    else if (key === '--rounds') a.rounds = n
    else if (key === '--repeat') a.repeat = n
    else throw new Error(`unknown option ${key}`)
  }
  if (a.channels > a.sessions) throw new Error('--channels must not exceed --sessions')
  return a
}

/**
 * What WsTransport reaches of a `ws` WebSocket on its pre-framed write path (transports/ws.ts): the TCP socket, its
 * stream state, ws's sender; `bufferedAmount` read as ws reads it. One per session, like the real objects.
 */
class BenchSocket extends EventEmitter {
  readonly extensions = ''
  readyState = 1
  readonly _sender = { _state: 0, _bufferedBytes: 0 }
  readonly _socket: { writable: boolean, _writableState: { length: number }, write: (buf: Buffer) => boolean }

  constructor (counter: { bytes: number, writes: number }) {
    super()
    this._socket = {
      writable: true,
      _writableState: { length: 0 },
      write (buf: Buffer): boolean { counter.bytes += buf.length; counter.writes++; return true }
    }
  }

  get bufferedAmount (): number { return this._socket._writableState.length + this._sender._bufferedBytes }
  send (): void {}
  ping (): void {}
  close (): void { this.readyState = 3 }
  terminate (): void { this.readyState = 3 }
}

const sorted = (xs: number[]): number[] => [...xs].sort((x, y) => x - y)
const median = (xs: number[]): number => sorted(xs)[Math.floor(xs.length / 2)]
const turn = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))
const round4 = (x: number): number => Number(x.toFixed(4))

/** One checkout's Herald, set up with its sessions subscribed: `run` makes `rounds` rounds and returns CPU µs per delivery. */
async function setUp (root: string, args: Args): Promise<{ run: () => Promise<number>, close: () => Promise<void> }> {
  const load = async <T>(path: string): Promise<T> => await import(pathToFileURL(join(root, path)).href) as T
  const { MemoryBroker } = await load<typeof import('../src/bus/broker-memory.js')>('src/bus/broker-memory.ts')
  const { Hub } = await load<typeof import('../src/hub/hub.js')>('src/hub/hub.ts')
  const { Namespaces } = await load<typeof import('../src/namespaces.js')>('src/namespaces.ts')
  const { Metrics } = await load<typeof import('../src/metrics.js')>('src/metrics.ts')
  const { Session } = await load<typeof import('../src/session/session.js')>('src/session/session.ts')
  const { SessionRegistry } = await load<typeof import('../src/session/registry.js')>('src/session/registry.ts')
  const { WsTransport } = await load<typeof import('../src/transports/ws.js')>('src/transports/ws.ts')
  const { default: pino } = await import('pino')

  const log = pino({ level: 'silent' })
  const broker = new MemoryBroker({ history: { size: 100, ttlSeconds: 300, metaTtlSeconds: 3600 }, idempotencyTtlSeconds: 60 })
  await broker.connect()
  const namespaces = new Namespaces({}, { historySize: 100, historyTtl: 300 })
  const metrics = new Metrics(false)
  const hub = new Hub({ broker, log, namespaces, observer: metrics.hubObserver })
  const services = { hub, registry: new SessionRegistry('bench'), namespaces, metrics, log, maxBufferBytes: 1 << 20, maxSubscriptions: 100 }
  const written = { bytes: 0, writes: 0 }
  const channels = Array.from({ length: args.channels }, (_, i) => `bench:room-${i}`)
  const subscribing: Array<Promise<unknown>> = []
  for (let i = 0; i < args.sessions; i++) {
    const transport = new WsTransport(new BenchSocket(written) as never, metrics.delivered, 0)
    const session = new Session(services as never, transport, { sub: `user-${i}`, subscribe: ['bench:*'], publish: [] }, { presence: false, quiet: true })
    subscribing.push(session.subscribe(channels[i % args.channels]))
  }
  await Promise.all(subscribing)

  const data = { text: 'x'.repeat(100) }
  // One round: one publication per channel, dispatched by the bus in one turn, written at the turn's end.
  const round = async (): Promise<void> => {
    await Promise.all(channels.map(async (channel) => await broker.publish({ channel, data })))
    await turn()
  }
  for (let i = 0; i < 20; i++) await round() // warm-up: the optimising compiler, the first history entries
  return {
    run: async () => {
      const before = written.writes
      const cpu = process.cpuUsage()
      for (let i = 0; i < args.rounds; i++) await round()
      const used = process.cpuUsage(cpu)
      const deliveries = written.writes - before
      if (deliveries !== args.rounds * args.sessions) throw new Error(`${root}: expected ${args.rounds * args.sessions} writes, got ${deliveries}`)
      return (used.user + used.system) / deliveries
    },
    close: async () => { hub.close(); await broker.close() }
  }
}

async function main (): Promise<void> {
  const args = parseArgs(process.argv.slice(2))
  const setups = []
  for (const root of args.roots) setups.push(await setUp(root, args))
  // The checkouts' repeats take turns (in an order that alternates), so a stretch of lost CPU falls on all of them.
  const figures: number[][] = args.roots.map(() => [])
  for (let r = 0; r < args.repeat; r++) {
    const order = r % 2 === 0 ? setups.map((_, i) => i) : setups.map((_, i) => setups.length - 1 - i)
    for (const i of order) figures[i].push(await setups[i].run())
  }
  for (const s of setups) await s.close()
  const result = {
    sessions: args.sessions,
    channels: args.channels,
    deliveriesPerRepeat: args.rounds * args.sessions,
    roots: args.roots.map((root, i) => ({
      root,
      usPerDelivery: figures[i].map(round4),
      // On a shared VM a repeat can lose the CPU to a neighbour without any steal reported, and that time is billed
      // to it: the least of the repeats is the figure such noise only ever adds to.
      minUsPerDelivery: round4(sorted(figures[i])[0]),
      medianUsPerDelivery: round4(median(figures[i]))
    })),
    // Each checkout against the first, repeat by repeat (neighbouring measurements), then the median of those.
    medianRatioToFirst: args.roots.map((_, i) => round4(median(figures[i].map((x, r) => x / figures[0][r]))))
  }
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}

main().catch((err: unknown) => { process.stderr.write(String((err as Error).stack ?? err) + '\n'); process.exit(1) })

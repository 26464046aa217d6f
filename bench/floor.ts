/**
 * The floor under every server in the benchmark: what one small message costs on this machine with no WebSocket,
 * no JSON and no framework — a plain `net` server writing a 230-byte buffer to loopback TCP sockets held by two
 * reader processes, in the shape of scenario 1 (10,000 sockets, bursts of 100 writes, paced to a rate).
 * It prints the server's and the readers' CPU per message (user and system). Loopback only; bounded.
 *
 *   npx tsx bench/floor.ts [--connections 10000] [--rate 50000] [--seconds 5] [--json]
 *
 * With --json it prints one JSON line instead (`npm run bench` runs it so, in the same run as the servers).
 */
import net from 'node:net'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf('--' + name)
  const v = i > 0 ? Number(process.argv[i + 1]) : dflt
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number`)
  return v
}

if (process.argv[2] === 'reader') {
  const [port, count, base] = process.argv.slice(3).map(Number)
  let opened = 0
  /** Why connects failed, by error code (sent to the parent, which names them if sockets are missing). */
  const failures: Record<string, number> = {}
  // A connect can fail on a busy machine (a source port still held by an earlier run, a full accept queue): it is
  // tried again, a few times, a little later.
  const connect = (i: number, attempt: number): void => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.0.${2 + base + (i % 4)}` })
    let connected = false
    s.once('connect', () => { connected = true })
    s.on('data', () => {})
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (connected) return
      failures[err.code ?? 'error'] = (failures[err.code ?? 'error'] ?? 0) + 1
      if (attempt < 5) setTimeout(() => connect(i, attempt + 1), 100 * (attempt + 1))
    })
  }
  const open = (): void => {
    for (let k = 0; k < 500 && opened < count; k++, opened++) connect(opened, 0)
    if (opened < count) setTimeout(open, 20)
  }
  open()
  const report = setInterval(() => { if (process.connected) process.send?.({ usage: process.cpuUsage(), failures }) }, 250)
  process.on('error', () => process.exit(0)) // the parent is gone
  process.on('disconnect', () => { clearInterval(report); setTimeout(() => process.exit(0), 200) })
} else {
  const connections = arg('connections', 10_000)
  const rate = arg('rate', 50_000)
  const seconds = Math.min(arg('seconds', 5), 60)
  const PER = 100
  const sockets: net.Socket[] = []
  const server = net.createServer((s) => { s.on('error', () => {}); sockets.push(s) })
  // Node's default accept queue (511) overflows under the readers' bursts of 500 connects: the kernel then drops the
  // handshake's last ACK, the reader's connect succeeds with no error, and the server sees the socket only when its
  // SYN-ACK is retried, seconds to a minute later (a run lost its floor to 107 of 10,000 sockets so). The kernel
  // caps the backlog at net.core.somaxconn.
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 65_535 }, resolve))
  const port = (server.address() as net.AddressInfo).port
  const readers = [0, 4].map((base) => fork(fileURLToPath(import.meta.url), ['reader', String(port), String(connections / 2), String(base)], { execArgv: process.execArgv }))
  const usage: Array<NodeJS.CpuUsage | undefined> = [undefined, undefined]
  const failures: Array<Record<string, number>> = [{}, {}]
  readers.forEach((r, i) => {
    r.on('message', (m: { usage: NodeJS.CpuUsage, failures: Record<string, number> }) => { usage[i] = m.usage; failures[i] = m.failures })
    r.on('error', () => {})
  })
  const deadline = Date.now() + 60_000
  while (sockets.length < connections && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  if (sockets.length < connections) {
    const why = failures.flatMap((f) => Object.entries(f)).map(([code, n]) => `${code} ×${n}`).join(', ')
    for (const r of readers) r.kill()
    throw new Error(`only ${sockets.length} of ${connections} connected (failed connects, each tried up to 6 times: ${why === '' ? 'none reported' : why})`)
  }
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const frame = Buffer.alloc(230, 0x78)
  const readerCpu = (): { user: number, system: number } => {
    let user = 0
    let system = 0
    for (const u of usage) { user += u?.user ?? 0; system += u?.system ?? 0 }
    return { user, system }
  }
  const r0 = readerCpu()
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const bursts = Math.round(rate / PER * seconds)
  let done = 0
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = Math.min(bursts, Math.floor((performance.now() - t0) / 1000 * rate / PER))
      for (; done < due; done++) {
        const start = (done * PER) % sockets.length
        for (let k = 0; k < PER; k++) sockets[(start + k) % sockets.length].write(frame)
      }
      if (done >= bursts) resolve(); else setTimeout(tick, 1)
    }
    tick()
  })
  const c = process.cpuUsage(c0)
  const wall = (performance.now() - t0) / 1000
  await new Promise((resolve) => setTimeout(resolve, 600))
  const r1 = readerCpu()
  const n = bursts * PER
  const f = (us: number): string => (us / n).toFixed(2)
  if (process.argv.includes('--json')) {
    const perMessage = (us: number): number => Math.round(us / n * 1000) / 1000
    process.stdout.write(JSON.stringify({
      connections, askedPerSec: rate, perSec: Math.round(n / wall), messages: n, bytes: frame.length,
      serverUs: perMessage(c.user + c.system), serverUserUs: perMessage(c.user), serverSystemUs: perMessage(c.system),
      readersUs: perMessage(r1.user - r0.user + r1.system - r0.system)
    }) + '\n')
  } else {
    process.stdout.write(`${n} writes of ${frame.length} B to ${connections} loopback sockets in ${wall.toFixed(2)} s (${Math.round(n / wall)}/s)\n`)
    process.stdout.write(`server  µs CPU per message: ${f(c.user + c.system)} (user ${f(c.user)}, system ${f(c.system)})\n`)
    process.stdout.write(`readers µs CPU per message: ${f(r1.user - r0.user + r1.system - r0.system)} (user ${f(r1.user - r0.user)}, system ${f(r1.system - r0.system)})\n`)
  }
  for (const s of sockets) s.destroy()
  server.close()
  for (const r of readers) r.disconnect()
}

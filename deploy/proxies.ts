import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { accessSync, chmodSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * Runs the shipped proxy configurations (deploy/nginx/herald.conf, deploy/haproxy/herald.cfg) on this machine, in
 * front of Herald nodes on loopback. The file that runs is the shipped file put through one fixed transformation,
 * {@link renderConfig}, so whatever is proved through it is proved of the file users copy:
 *
 * - nginx: the upstream's `server` lines become one per given node (keeping the shipped parameters), the one
 *   `listen` gets the given address (keeping its parameters), `pid`, `error_log` (to stderr) and `access_log` move
 *   into the run directory, temp paths are added there, and `user` is dropped.
 * - HAProxy: the backend's `server` lines become one per given node (`herald-1`, … keeping the shipped
 *   parameters), the one `bind` gets the given address, `stats socket` and `pidfile` move into the run directory,
 *   and `user`, `group`, `chroot` and `daemon` are dropped.
 *
 * Tests may also change named directives (`set`), drop some (`remove`) and add lines to a block (`append`), each
 * of which must match something, or the render fails: a test that shortens a timeout says so by name.
 */

export type ProxyKind = 'nginx' | 'haproxy'

const DEPLOY = fileURLToPath(new URL('.', import.meta.url))

/** The shipped configuration of each proxy. */
export const SHIPPED: Record<ProxyKind, string> = {
  nginx: join(DEPLOY, 'nginx', 'herald.conf'),
  haproxy: join(DEPLOY, 'haproxy', 'herald.cfg')
}

export interface RenderOptions {
  /** The Herald nodes, `host:port` each. */
  upstreams: string[]
  /** Where the proxy listens. */
  listen: { host: string, port: number }
  /** Directory for the pid file, logs, temp files and sockets. */
  runDir: string
  /** Directive (nginx: its name; HAProxy: its leading words, e.g. `timeout tunnel`) → new arguments, everywhere it occurs. */
  set?: Record<string, string>
  /** Directives to delete, everywhere they occur. */
  remove?: string[]
  /** Block (nginx: `location /v1/sse`, `http`; HAProxy: a section header such as `backend herald`) → directives added at its end (nginx: without the `;`). */
  append?: Record<string, string[]>
}

/** One configuration line: its text, the directive's words (comment and `;` stripped) and the enclosing blocks. */
interface Line { text: string, words: string[], blocks: string[] }

function parse (kind: ProxyKind, text: string): Line[] {
  const stack: string[] = []
  let section = ''
  let continued = false
  return text.split('\n').map((raw) => {
    const code = raw.replace(/(^|\s)#.*$/, '').trim()
    const words = code.replace(/[;{]\s*$/, '').trim().split(/\s+/).filter(Boolean)
    if (kind === 'haproxy') {
      if (code !== '' && !/^\s/.test(raw)) section = code
      return { text: raw, words, blocks: section === '' ? [] : [section] }
    }
    const line = { text: raw, words: continued ? [] : words, blocks: [...stack] }
    if (code.endsWith('{')) stack.push(words.join(' '))
    else if (code === '}') stack.pop()
    else if (code !== '') continued = !code.endsWith(';')
    return line
  })
}

function matches (line: Line, key: string): boolean {
  const want = key.split(/\s+/)
  return want.every((w, i) => line.words[i] === w) && !/[{]\s*$/.test(line.text.replace(/#.*$/, ''))
}

function indentOf (text: string): string { return /^\s*/.exec(text)![0] }

function directive (kind: ProxyKind, indent: string, words: string[]): string {
  return indent + words.join(' ') + (kind === 'nginx' ? ';' : '')
}

/** The shipped file `text` made runnable here (see the module comment for exactly what changes). */
export function renderConfig (kind: ProxyKind, text: string, opts: RenderOptions): string {
  if (opts.upstreams.length === 0) throw new Error('renderConfig: no upstreams given')
  const lines = parse(kind, text)
  const out: string[] = []
  const dir = opts.runDir
  const listen = `${opts.listen.host}:${opts.listen.port}`
  const serverBlock = kind === 'nginx' ? 'upstream herald' : 'backend herald'
  const serverLines = lines.filter((l) => l.words[0] === 'server' && l.blocks.includes(serverBlock))
  const listenKey = kind === 'nginx' ? 'listen' : 'bind'
  const listens = lines.filter((l) => l.words[0] === listenKey)
  if (serverLines.length === 0) throw new Error(`renderConfig: no server lines in "${serverBlock}"`)
  if (listens.length !== 1) throw new Error(`renderConfig: expected exactly one active "${listenKey}" line, found ${listens.length}`)
  const params = serverLines.map((l) => l.words.slice(kind === 'nginx' ? 2 : 3).join(' '))
  if (params.some((p) => p !== params[0])) throw new Error('renderConfig: the shipped server lines have different parameters; cannot tell which to use')
  const used = new Set<string>()
  const drop = new Set(kind === 'nginx' ? ['user'] : ['user', 'group', 'chroot', 'daemon'])
  const ends = blockEnds(kind, lines)

  /** What the shipped `line` becomes. */
  const rendered = (line: Line): string[] => {
    const [word] = line.words
    const indent = indentOf(line.text)
    const removeKey = (opts.remove ?? []).find((k) => matches(line, k))
    if (removeKey !== undefined) { used.add('remove:' + removeKey); return [] }
    const setKey = Object.keys(opts.set ?? {}).find((k) => matches(line, k))
    if (setKey !== undefined) {
      used.add('set:' + setKey)
      return [directive(kind, indent, [setKey, opts.set![setKey]])]
    }
    if (word !== undefined && drop.has(word) && line.blocks.length <= (kind === 'nginx' ? 0 : 1)) return []
    if (line === serverLines[0]) {
      return opts.upstreams.map((u, n) => {
        const words = kind === 'nginx' ? ['server', u] : ['server', `herald-${n + 1}`, u]
        return directive(kind, indent, params[0] === '' ? words : [...words, params[0]])
      })
    }
    if (serverLines.includes(line)) return []
    if (line === listens[0]) return [directive(kind, indent, [listenKey, listen, ...line.words.slice(2)])]
    if (kind === 'nginx') {
      if (word === 'pid' && line.blocks.length === 0) return [directive(kind, indent, ['pid', join(dir, 'nginx.pid')])]
      if (word === 'error_log') return [directive(kind, indent, ['error_log', 'stderr', ...line.words.slice(2)])]
      if (word === 'access_log' && line.words[1] !== 'off') return [directive(kind, indent, ['access_log', join(dir, 'access.log'), ...line.words.slice(2)])]
      if (line.words.join(' ') === 'http' && line.blocks.length === 0) {
        // nginx creates its compiled-in temp paths (/var/lib/nginx/…) at start-up: move them here.
        return [line.text, ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((temp) => directive(kind, indent + '    ', [`${temp}_temp_path`, join(dir, temp)]))]
      }
    } else {
      if (word === 'pidfile') return [directive(kind, indent, ['pidfile', join(dir, 'haproxy.pid')])]
      if (word === 'stats' && line.words[1] === 'socket') return [directive(kind, indent, ['stats', 'socket', join(dir, 'haproxy.sock'), ...line.words.slice(3)])]
    }
    return [line.text]
  }

  for (const [i, line] of lines.entries()) {
    const mine = rendered(line)
    for (const block of ends.get(i) ?? []) {
      const extra = opts.append?.[block]
      if (extra === undefined) continue
      used.add('append:' + block)
      const inner = kind === 'nginx' ? indentOf(line.text) + '    ' : '    '
      // nginx: before the block's closing brace; HAProxy: after the section's last directive.
      mine.splice(kind === 'nginx' ? mine.length - 1 : mine.length, 0, ...extra.map((e) => directive(kind, inner, [e])))
    }
    out.push(...mine)
  }
  const unused = [
    ...Object.keys(opts.set ?? {}).map((k) => 'set:' + k),
    ...(opts.remove ?? []).map((k) => 'remove:' + k),
    ...Object.keys(opts.append ?? {}).map((k) => 'append:' + k)
  ].filter((k) => !used.has(k))
  if (unused.length > 0) throw new Error(`renderConfig: ${unused.join(', ')} matched nothing in the shipped ${kind} configuration`)
  return out.join('\n')
}

/** Line index → the blocks that end there (nginx: at its `}`; HAProxy: at a section's last directive). */
function blockEnds (kind: ProxyKind, lines: Line[]): Map<number, string[]> {
  const ends = new Map<number, string[]>()
  const add = (i: number, block: string): void => { ends.set(i, [...(ends.get(i) ?? []), block]) }
  if (kind === 'nginx') {
    lines.forEach((l, i) => { if (l.text.replace(/#.*$/, '').trim() === '}') add(i, l.blocks[l.blocks.length - 1]) })
  } else {
    const last = new Map<string, number>()
    lines.forEach((l, i) => { if (l.blocks[0] !== undefined && l.words.length > 0) last.set(l.blocks[0], i) })
    for (const [block, i] of last) add(i, block)
  }
  return ends
}

/** The proxy's executable: $HERALD_NGINX / $HERALD_HAPROXY, else PATH, else /usr/sbin and /usr/local/sbin; undefined if none. */
export function findProxy (kind: ProxyKind): string | undefined {
  const override = process.env[kind === 'nginx' ? 'HERALD_NGINX' : 'HERALD_HAPROXY']
  if (override !== undefined && override !== '') return override
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin']
  for (const d of dirs) {
    if (d === '') continue
    try { accessSync(join(d, kind), constants.X_OK); return join(d, kind) } catch {}
  }
  return undefined
}

export interface StartProxyOptions extends Partial<Pick<RenderOptions, 'set' | 'remove' | 'append'>> {
  upstreams: string[]
  /** Port to listen on (default: a free one) on `host` (default 127.0.0.1). */
  port?: number
  host?: string
  /** Run directory (kept); default: a new temporary directory, removed by stop(). */
  dir?: string
  /** Configuration text to render instead of the shipped file. */
  source?: string
  /** Executable (default: findProxy). */
  bin?: string
  /** How long to wait for the proxy to listen (default 15 s). */
  readyTimeoutMs?: number
  /** Run it in its own process group, so that a Ctrl-C in the terminal reaches only the process that started it. */
  detached?: boolean
}

export interface RunningProxy {
  kind: ProxyKind
  /** http://host:port */
  url: string
  /** ws://host:port */
  wsUrl: string
  port: number
  /** PID of the nginx master / HAProxy master (`-W`): the process this module started. */
  pid: number
  dir: string
  configPath: string
  /** The rendered configuration. */
  config: string
  /** What the proxy wrote to stdout and stderr so far (errors; HAProxy's access log). */
  output: () => string
  /** Resolves when the proxy process has exited. */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Reloads the configuration (nginx: SIGHUP; HAProxy: SIGUSR2) and waits until a new worker runs. */
  reload: () => Promise<void>
  /** Stops it (SIGTERM; SIGKILL to it and its workers after 5 s) and removes a temporary run directory. */
  stop: () => Promise<void>
}

export async function freeLoopbackPort (host = '127.0.0.1'): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/** PIDs of the direct children of `pid` (the proxy's workers), read from /proc. */
export function childPids (pid: number): number[] {
  const found: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === pid) found.push(Number(name))
    } catch {}
  }
  return found
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function accepts (host: string, port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, host)
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Renders the shipped configuration of `kind` for `opts.upstreams` and starts the proxy in the foreground as a
 * child process (its open-file limit raised as far as the hard limit allows), after the proxy's own syntax check.
 * Resolves once it accepts connections; rejects with the proxy's stderr if it does not start.
 */
export async function startProxy (kind: ProxyKind, opts: StartProxyOptions): Promise<RunningProxy> {
  const bin = opts.bin ?? findProxy(kind)
  if (bin === undefined) throw new Error(`${kind} not found (PATH, /usr/sbin; or set HERALD_${kind.toUpperCase()}): apt-get install ${kind}`)
  const host = opts.host ?? '127.0.0.1'
  const port = opts.port ?? await freeLoopbackPort(host)
  const temporary = opts.dir === undefined
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), `herald-${kind}-`))
  // nginx started as root runs its workers as nobody, who must reach the temp paths in here.
  chmodSync(dir, 0o755)
  const config = renderConfig(kind, opts.source ?? readFileSync(SHIPPED[kind], 'utf8'), {
    upstreams: opts.upstreams, listen: { host, port }, runDir: dir, set: opts.set, remove: opts.remove, append: opts.append
  })
  const configPath = join(dir, kind === 'nginx' ? 'nginx.conf' : 'haproxy.cfg')
  writeFileSync(configPath, config)
  const cleanup = (): void => { if (temporary) rmSync(dir, { recursive: true, force: true }) }

  const args = kind === 'nginx'
    ? ['-p', dir, '-c', configPath, '-e', 'stderr', '-g', 'daemon off;']
    : ['-W', '-db', '-f', configPath, '-p', join(dir, 'haproxy.pid')]
  const check = spawnSync(bin, kind === 'nginx' ? ['-t', '-q', ...args] : ['-c', '-q', '-f', configPath], { encoding: 'utf8' })
  if (check.error !== undefined || check.status !== 0) {
    cleanup()
    throw new Error(`${kind} refused the rendered configuration ${configPath}: ${check.error?.message ?? ''}\n${check.stderr}${check.stdout}`)
  }

  // `exec` keeps the PID the proxy's own; the limit is raised for the master, and so for its workers.
  const script = 'ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"'
  const child: ChildProcess = spawn('bash', ['-c', script, 'bash', bin, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: opts.detached === true })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-1_000_000) })
  child.stderr!.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-1_000_000) })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => { setTimeout(() => resolve({ code, signal }), 20) })
  })
  const pid = child.pid!
  const running = (): boolean => child.exitCode === null && child.signalCode === null

  const stop = async (): Promise<void> => {
    if (running()) {
      const workers = childPids(pid)
      child.kill('SIGTERM')
      const timer = setTimeout(() => {
        if (!running()) return
        for (const w of [...workers, ...childPids(pid)]) { try { process.kill(w, 'SIGKILL') } catch {} }
        child.kill('SIGKILL')
      }, 5000)
      await exited
      clearTimeout(timer)
    }
    cleanup()
  }

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000)
  for (;;) {
    if (!running()) {
      await exited
      cleanup()
      throw new Error(`${kind} exited (${String(child.exitCode ?? child.signalCode)}) before listening on ${host}:${port}:\n${output}`)
    }
    if (await accepts(host, port)) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`${kind} did not listen on ${host}:${port} within ${opts.readyTimeoutMs ?? 15_000} ms:\n${output}`)
    }
    await sleep(25)
  }

  const reload = async (): Promise<void> => {
    if (!running()) throw new Error(`${kind} is not running:\n${output}`)
    const before = new Set(childPids(pid))
    child.kill(kind === 'nginx' ? 'SIGHUP' : 'SIGUSR2')
    const until = Date.now() + 15_000
    while (!childPids(pid).some((p) => !before.has(p))) {
      if (!running() || Date.now() > until) throw new Error(`${kind} did not start a new worker after the reload signal:\n${output}`)
      await sleep(25)
    }
  }

  const url = `http://${host}:${port}`
  return { kind, url, wsUrl: `ws://${host}:${port}`, port, pid, dir, configPath, config, output: () => output, exited, reload, stop }
}

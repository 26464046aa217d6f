import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { childPids, freeLoopbackPort } from '../../deploy/proxies.js'
import { publish, redisSkipReason, ROOT, until, WsClient } from '../helper.js'
import { nodeOf, proxySkipReason } from '../support/proxies.js'

/*
 * `npm run cluster` (scripts/cluster.ts) as a user runs it: through npm, until its ready line; then a publish
 * through its proxy reaches WebSockets on every node; SIGTERM to npm, or a Ctrl-C (SIGINT to the terminal's
 * process group), drains the nodes (their clients are told 1012 through the proxy) and leaves none of the
 * processes it started (Redis, nodes, proxy master and workers) nor its run directory; and when one of its
 * processes dies it says which and stops the rest.
 */

const skip = proxySkipReason('nginx') ?? proxySkipReason('haproxy') ?? redisSkipReason()

interface Proc { pid: number, ppid: number, start: string, cmd: string }

/** /proc/<pid>/stat's start time: with the PID, it names one process even if the PID is reused later. */
function startTime (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[0] === 'Z' ? undefined : fields[19]
  } catch { return undefined }
}

/** Every live descendant of `pid`. */
function descendants (pid: number): Proc[] {
  const out: Proc[] = []
  for (const child of childPids(pid)) {
    const start = startTime(child)
    if (start === undefined) continue
    let cmd = ''
    try { cmd = readFileSync(`/proc/${child}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() } catch {}
    out.push({ pid: child, ppid: pid, start, cmd }, ...descendants(child))
  }
  return out
}

const isAlive = (p: Proc): boolean => startTime(p.pid) === p.start

async function refuses (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  })
}

interface Cluster {
  npm: ChildProcess
  url: string
  wsUrl: string
  port: number
  token: string
  runDir: string
  /** What `npm run cluster` started: all its descendants seen once it was ready (see snapshot). */
  tree: Proc[]
  /** Adds the descendants alive now to `tree` (a proxy may start workers after it listens). */
  snapshot: () => void
  stderr: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** Runs `npm run cluster -- <args>` on a free port and waits for its ready line; whatever is left is SIGKILLed by PID when the test ends. */
async function runCluster (t: TestContext, args: string[]): Promise<Cluster> {
  const port = await freeLoopbackPort()
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), LOG_LEVEL: 'warn' }
  for (const key of ['NODE_TEST_CONTEXT', 'REDIS_URL', 'REDIS_CLUSTER', 'JWT_SECRET', 'NODES', 'PROXY', 'REDIS']) delete env[key]
  // Its own process group, as in a terminal: a Ctrl-C there is SIGINT to the group (see the last test).
  const npm = spawn('npm', ['run', '--silent', 'cluster', '--', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stdout = ''
  let stderr = ''
  npm.stdout!.on('data', (d: Buffer) => { stdout += d.toString() })
  npm.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => npm.once('exit', (code, signal) => resolve({ code, signal })))
  let tree: Proc[] = []
  let runDir: string | undefined
  // After a failure: what is left is SIGKILLed by PID, and its run directory removed.
  t.after(() => {
    for (const p of [...tree, ...descendants(npm.pid!)]) if (isAlive(p)) process.kill(p.pid, 'SIGKILL')
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL')
    if (runDir !== undefined) rmSync(runDir, { recursive: true, force: true })
  })
  await until(() => stdout.includes('Herald cluster ready:') || npm.exitCode !== null, 'the ready line of npm run cluster', 120_000)
    .catch((err: Error) => { throw new Error(`${err.message}\nstdout:\n${stdout}\nstderr:\n${stderr}`) })
  assert.ok(stdout.includes('Herald cluster ready:'), `npm run cluster exited (${String(npm.exitCode)}) before it was ready:\n${stdout}\n${stderr}`)
  const url = /^Herald cluster ready: (http:\/\/127\.0\.0\.1:\d+)$/m.exec(stdout)?.[1]
  assert.equal(url, `http://127.0.0.1:${port}`, `the ready line names the proxy on PORT:\n${stdout}`)
  const token = /^\s*TOKEN=(\S+)$/m.exec(stdout)?.[1]
  runDir = /run directory (\S+)$/m.exec(stdout)?.[1]
  assert.ok(token !== undefined && runDir !== undefined, `a token and the run directory are printed:\n${stdout}`)
  const c: Cluster = { npm, url, wsUrl: url.replace('http:', 'ws:'), port, token, runDir: runDir!, tree: [], stderr: () => stderr, exited, snapshot: () => {} }
  c.snapshot = () => {
    for (const p of descendants(npm.pid!)) if (!c.tree.some((q) => q.pid === p.pid && q.start === p.start)) c.tree.push(p)
    tree = c.tree
  }
  c.snapshot()
  return c
}

/** WebSockets through the proxy until `n` different nodes hold one (bounded), each subscribed to `channel`. */
async function wsOnNodes (t: TestContext, c: Cluster, n: number, channel: string): Promise<Map<string, WsClient>> {
  const byNode = new Map<string, WsClient>()
  for (let i = 0; byNode.size < n; i++) {
    assert.ok(i < n * 4, `WebSockets through the proxy reached only nodes ${[...byNode.keys()].join(', ')}`)
    const ws = await WsClient.connect(c.wsUrl, { token: c.token })
    t.after(() => ws.close())
    const node = nodeOf((await ws.waitFor((f) => f.type === 'connected', 10_000)).client)
    await ws.subscribe(channel)
    if (!byNode.has(node)) byNode.set(node, ws)
  }
  return byNode
}

/** After the cluster exited: none of its processes, ports or files are left. */
async function assertNothingLeft (c: Cluster): Promise<void> {
  await until(() => c.tree.every((p) => !isAlive(p)), 'every process the cluster started to be gone', 15_000)
    .catch(() => { throw new Error(`still running: ${c.tree.filter(isAlive).map((p) => `${p.pid} ${p.cmd}`).join('; ')}`) })
  assert.ok(await refuses(c.port), 'nothing listens on the proxy port')
  assert.equal(existsSync(c.runDir), false, `the run directory ${c.runDir} is removed`)
}

void test('npm run cluster: ready line, a publish through nginx reaches WebSockets on all 3 nodes; SIGTERM drains the nodes and stops every process it started', { skip, timeout: 240_000 }, async (t) => {
  const c = await runCluster(t, [])
  const nodes = await wsOnNodes(t, c, 3, 'cluster:hello')
  // What it started: one redis-server, three Herald nodes, an nginx master and its workers.
  c.snapshot()
  const script = c.tree.find((p) => / scripts\/cluster\.ts$/.test(p.cmd))
  assert.ok(script !== undefined, `the script runs under npm: ${JSON.stringify(c.tree)}`)
  const started = c.tree.filter((p) => p.ppid === script.pid)
  const count = (re: RegExp): number => started.filter((p) => re.test(p.cmd)).length
  assert.equal(count(/^redis-server /), 1, `one redis-server: ${JSON.stringify(started)}`)
  assert.equal(count(/src\/server\.ts$/), 3, 'three Herald nodes')
  assert.equal(count(/^nginx: master/), 1, 'an nginx master')
  const master = started.find((p) => /^nginx: master/.test(p.cmd))!
  assert.ok(c.tree.some((p) => p.ppid === master.pid), 'nginx workers')

  assert.equal((await publish(c.url, 'cluster:hello', { hello: 'cluster' }, { token: c.token })).status, 201)
  for (const [node, ws] of nodes) assert.deepEqual((await ws.events('cluster:hello', 1, 10_000))[0].data, { hello: 'cluster' }, `the event on ${node}`)
  // The demo page is served through the proxy, with its development token route.
  assert.equal((await fetch(`${c.url}/`)).status, 200)
  assert.equal((await fetch(`${c.url}/dev/token?sub=demo`)).status, 200)

  c.snapshot()
  process.kill(c.npm.pid!, 'SIGTERM')
  // The nodes drain: every WebSocket is told to reconnect (1012), not dropped.
  for (const [node, ws] of nodes) assert.equal((await ws.waitClosed(30_000)).code, 1012, `the WebSocket on ${node} was closed by its node's drain`)
  const exit = await c.exited
  assert.deepEqual(exit, { code: 0, signal: null }, `npm run cluster exits 0 after SIGTERM; stderr:\n${c.stderr()}`)
  await assertNothingLeft(c)
})

void test('npm run cluster -- --proxy haproxy --nodes 2: when a node dies, it says which and stops everything else (exit 1)', { skip, timeout: 240_000 }, async (t) => {
  const c = await runCluster(t, ['--proxy', 'haproxy', '--nodes', '2'])
  assert.equal(c.tree.filter((p) => /^\S*haproxy /.test(p.cmd)).length >= 1, true, `haproxy runs: ${JSON.stringify(c.tree)}`)
  const nodes = await wsOnNodes(t, c, 2, 'cluster:die')
  assert.equal((await publish(c.url, 'cluster:die', { n: 1 }, { token: c.token })).status, 201)
  for (const ws of nodes.values()) await ws.events('cluster:die', 1, 10_000)
  c.snapshot()
  const victim = c.tree.find((p) => /src\/server\.ts$/.test(p.cmd))!
  process.kill(victim.pid, 'SIGKILL')
  const exit = await c.exited
  assert.equal(exit.code, 1, 'npm run cluster fails')
  assert.match(c.stderr(), new RegExp(`herald-\\d \\(pid ${victim.pid}\\) exited \\(SIGKILL\\); stopping the cluster`))
  await assertNothingLeft(c)
})

void test('npm run cluster -- --nodes 2: Ctrl-C in its terminal (SIGINT to the process group) drains the nodes while the proxy still runs, then stops everything', { skip, timeout: 240_000 }, async (t) => {
  const c = await runCluster(t, ['--nodes', '2'])
  const nodes = await wsOnNodes(t, c, 2, 'cluster:ctrl-c')
  c.snapshot()
  process.kill(-c.npm.pid!, 'SIGINT')
  // 1012 reaches the clients through nginx: the proxy was not stopped before the nodes had drained.
  for (const [node, ws] of nodes) assert.equal((await ws.waitClosed(30_000)).code, 1012, `the WebSocket on ${node} was closed by its node's drain`)
  await c.exited
  await assertNothingLeft(c)
})

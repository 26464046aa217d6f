import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import WebSocket from 'ws'
import type { DeepPartial, HeraldConfig } from '../../src/config.js'
import { SHIPPED, childPids, renderConfig } from '../../deploy/proxies.js'
import { poll, publish, redisSkipReason, sleep, startHerald, startRedis, token, until, WsClient, SECRET, type Frame, type TestApp } from '../helper.js'
import { cleanup, startServer, type Server } from '../support/process.js'
import { seededRandom, testSeed } from '../support/random.js'
import { Fleet, PROXIES, SseProbe, haproxyCommand, nodeOf, percentiles, proxySkipReason, readTimeouts, round, rssKiB, useProxy, wsAttempt, type FleetAll, type FleetReady, type ProxyKind, type RunningProxy } from '../support/proxies.js'

/*
 * The shipped proxy configurations (deploy/nginx/herald.conf, deploy/haproxy/herald.cfg), rendered by
 * deploy/proxies.ts and run as real nginx and HAProxy processes in front of several Herald nodes on one Redis.
 * Each test asserts what users feel through the proxy. Waits are on events (frames, stream ends, process reports);
 * the only sleeps hold a connection idle past a timeout on purpose, or pace a loop.
 */

const SEED = testSeed(0x9e0c1)

interface Node extends TestApp { id: string }

/** `n` in-process Herald nodes on one private Redis. */
async function nodes (t: TestContext, n: number, config: DeepPartial<HeraldConfig> = {}): Promise<Node[]> {
  const redis = await startRedis(t)
  const started: Node[] = []
  for (let i = 0; i < n; i++) {
    const app = await startHerald(t, { redisUrl: redis.url, config })
    const ready = await (await fetch(`${app.url}/readyz`)).json() as { node: string }
    started.push({ ...app, id: ready.node })
  }
  return started
}

const upstreams = (ns: Array<{ port: number }>): string[] => ns.map((n) => `127.0.0.1:${n.port}`)

/** Opens WebSockets through the proxy until every node holds at least one (bounded); returns them with their nodes. */
async function wsOnEveryNode (t: TestContext, proxy: RunningProxy, ns: Node[], channel: string): Promise<Array<{ ws: WsClient, node: string }>> {
  const out: Array<{ ws: WsClient, node: string }> = []
  while (!ns.every((n) => out.some((c) => c.node === n.id))) {
    assert.ok(out.length < ns.length * 4, `WebSockets through ${proxy.kind} did not reach every node: ${out.map((c) => c.node).join(', ')}`)
    const ws = await WsClient.connect(proxy.wsUrl)
    t.after(() => ws.close())
    const connected = await ws.waitFor((f) => f.type === 'connected')
    await ws.subscribe(channel)
    out.push({ ws, node: nodeOf(connected.client) })
  }
  return out
}

async function sseOnEveryNode (t: TestContext, proxy: RunningProxy, ns: Node[], channel: string): Promise<Array<{ sse: SseProbe, node: string }>> {
  const out: Array<{ sse: SseProbe, node: string }> = []
  while (!ns.every((n) => out.some((c) => c.node === n.id))) {
    assert.ok(out.length < ns.length * 4, `SSE streams through ${proxy.kind} did not reach every node: ${out.map((c) => c.node).join(', ')}`)
    const sse = new SseProbe(proxy.url, [channel], { token: token() })
    t.after(() => sse.close())
    await sse.until(() => sse.frames().some((f) => f.type === 'subscribed'), 'the SSE stream to subscribe')
    out.push({ sse, node: nodeOf(sse.connectedClient!) })
  }
  return out
}

const offsets = (events: Frame[]): number[] => events.map((e) => e.offset as number)
const oneTo = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1)

test('renderConfig changes only the servers, the listen address and file paths of the shipped files', () => {
  for (const kind of PROXIES) {
    const shipped = readFileSync(SHIPPED[kind], 'utf8')
    const rendered = renderConfig(kind, shipped, { upstreams: ['127.0.0.1:4001', '127.0.0.1:4002'], listen: { host: '127.0.0.1', port: 8080 }, runDir: '/run/dir' })
    const code = (text: string): string[] => text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    const before = new Set(code(shipped))
    const after = new Set(code(rendered))
    const changed = /^(server |listen |bind |pid |error_log |access_log |user |stats socket |[a-z_]+_temp_path )/
    const added = [...after].filter((l) => !before.has(l))
    const removed = [...before].filter((l) => !after.has(l))
    assert.deepEqual(added.filter((l) => !changed.test(l)), [], `${kind}: only servers, listen and paths are added`)
    assert.deepEqual(removed.filter((l) => !changed.test(l)), [], `${kind}: only servers, listen and paths are removed`)
    assert.ok(added.some((l) => l.includes('127.0.0.1:4002')) && added.some((l) => l.includes('127.0.0.1:8080')), `${kind}: servers and listen address rendered`)
  }
  assert.throws(() => renderConfig('nginx', readFileSync(SHIPPED.nginx, 'utf8'), { upstreams: ['a:1'], listen: { host: '127.0.0.1', port: 1 }, runDir: '/x', set: { no_such_directive: '1' } }), /no_such_directive.*matched nothing/)
})

for (const kind of PROXIES) {
  const skip = proxySkipReason(kind) ?? redisSkipReason()

  void test(`${kind}: a WebSocket upgrade with a token works through the proxy; a bad or missing token is refused 401 with its JSON code`, { skip }, async (t) => {
    const ns = await nodes(t, 2)
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns) })
    // 1. Header token and ?token= both upgrade, and the socket carries frames both ways.
    for (const query of [false, true]) {
      const ws = await WsClient.connect(proxy.wsUrl, { query })
      t.after(() => ws.close())
      const connected = await ws.waitFor((f) => f.type === 'connected')
      assert.equal(connected.sub, 'tester')
      assert.ok(ns.some((n) => n.id === nodeOf(connected.client)), 'the connection is on one of the nodes')
      await ws.subscribe(`auth:${query ? 'q' : 'h'}`)
      assert.equal((await publish(proxy.url, `auth:${query ? 'q' : 'h'}`, { query })).status, 201)
      assert.deepEqual((await ws.events(`auth:${query ? 'q' : 'h'}`, 1))[0].data, { query })
    }
    // 2. A token signed with another key, and none at all: the node's 401 and its JSON body reach the client.
    for (const tok of [token({}, { key: 'some-other-secret-0123456789' }), null]) {
      const refused = await wsAttempt(proxy.wsUrl, tok === null ? {} : { token: tok })
      assert.ok('status' in refused, 'the upgrade is refused')
      assert.equal(refused.status, 401)
      assert.equal(refused.body.code, 'HERALD_ERR_UNAUTHORIZED', JSON.stringify(refused.body))
    }
    // 3. A plain GET of the WebSocket route gets Herald's 426; /metrics is not exposed through the proxy.
    assert.equal((await fetch(`${proxy.url}/v1/ws`)).status, 426)
    assert.equal((await fetch(`${proxy.url}/metrics`)).status, 403)
  })

  void test(`${kind}: an SSE event published after the stream opened arrives while it is still open, before any other traffic (nothing buffers it)`, { skip }, async (t) => {
    // No heartbeat during the test (300 s): nothing but the event itself can push it through a buffer.
    const ns = await nodes(t, 2, { sseHeartbeatSeconds: 300 })
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns) })
    const viaProxy = await sseLatency(t, proxy.url, ns, 'sse:prompt', 30)
    const direct = await sseLatency(t, ns[0].url, ns, 'sse:direct', 30)
    t.diagnostic(`${kind} SSE publish-to-receive ms (publish over REST to alternating nodes): through the proxy ${JSON.stringify(viaProxy)}, direct ${JSON.stringify(direct)}`)
    if (kind === 'haproxy') {
      // What `option http-no-delay` is for: without it the events still come, each held back (reported, not asserted).
      const delayed = await useProxy(t, kind, { upstreams: upstreams(ns), remove: ['option http-no-delay'] })
      t.diagnostic(`haproxy without option http-no-delay: ${JSON.stringify(await sseLatency(t, delayed.url, ns, 'sse:delay', 10))}`)
    }
  })

  void test(`${kind}: idle WebSocket and SSE connections outlive the proxy's read timeout on heartbeats alone (heartbeat 1 s < timeout 3 s, as shipped 25/15 s < 60 s)`, { skip }, async (t) => {
    const ns = await nodes(t, 2, { wsPingIntervalSeconds: 1, sseHeartbeatSeconds: 1 })
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns), set: readTimeouts(kind, '3s') })
    const { ws, sse, pings } = await idlePair(t, proxy, 'idle:ok')
    // Held idle for more than twice the proxy's timeout on purpose: only heartbeats flow (pings and pongs, `: hb` comments).
    await sleep(7_000)
    assert.equal(ws.closed, null, 'the WebSocket is still open')
    assert.equal(sse.ended, false, 'the SSE stream is still open')
    assert.ok(pings() >= 3 && sse.heartbeats() >= 3, `heartbeats flowed: ${pings()} pings, ${sse.heartbeats()} SSE comments`)
    assert.equal((await publish(proxy.url, 'idle:ok', { after: 'idle' })).status, 201)
    assert.deepEqual((await ws.events('idle:ok', 1))[0].data, { after: 'idle' })
    await sse.until(() => sse.events('idle:ok').length === 1, 'the event on the SSE stream after the idle time')
  })

  void test(`${kind}: with heartbeats longer than the proxy's read timeout (30 s > 3 s) the proxy cuts idle WebSocket and SSE connections (the idle test can fail)`, { skip }, async (t) => {
    const ns = await nodes(t, 2, { wsPingIntervalSeconds: 30, sseHeartbeatSeconds: 30 })
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns), set: readTimeouts(kind, '3s') })
    const opened = performance.now()
    const { ws, sse, pings } = await idlePair(t, proxy, 'idle:cut')
    // Cut by the proxy before the first heartbeat was due: no close frame from Herald (1006), no disconnect message.
    const closed = await ws.waitClosed(25_000)
    await sse.until(() => sse.ended, 'the proxy to end the SSE stream', 25_000)
    assert.equal(closed.code, 1006, 'closed without a close frame: the proxy dropped the connection')
    assert.equal(pings(), 0, 'no ping had been sent yet')
    assert.equal(sse.heartbeats(), 0, 'no heartbeat had been sent yet')
    assert.ok(!sse.frames().some((f) => f.type === 'disconnect'), 'Herald did not end the stream')
    t.diagnostic(`${kind} cut the idle SSE stream after ${round((sse.endedAt! - opened) / 1000)} s (read timeout 3 s)`)
  })

  void test(`${kind}: a publish on any node reaches WebSocket and SSE clients on every node through the proxy`, { skip }, async (t) => {
    const ns = await nodes(t, 3)
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns) })
    const wss = await wsOnEveryNode(t, proxy, ns, 'fan:out')
    const sses = await sseOnEveryNode(t, proxy, ns, 'fan:out')
    // One publish on each node directly, then one through the proxy.
    for (const [i, n] of ns.entries()) assert.equal((await publish(n.url, 'fan:out', { from: i })).status, 201)
    assert.equal((await publish(proxy.url, 'fan:out', { from: 'proxy' })).status, 201)
    for (const { ws, node } of wss) assert.deepEqual(offsets(await ws.events('fan:out', 4)), oneTo(4), `WebSocket on ${node}`)
    for (const { sse, node } of sses) {
      await sse.until(() => sse.events('fan:out').length >= 4, `4 events on the SSE stream on ${node}`)
      assert.deepEqual(offsets(sse.events('fan:out')), oneTo(4), `SSE on ${node}`)
    }
    t.diagnostic(`${kind}: ${wss.length} WebSockets and ${sses.length} SSE streams over nodes ${JSON.stringify(ns.map((n) => n.id))}`)
  })

  void test(`${kind}: long-poll cursors continue on whichever node answers`, { skip }, async (t) => {
    const ns = await nodes(t, 3)
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns) })
    const ch = 'poll:any'
    let cursor = (await poll(proxy.url, [ch], { timeout: 0 })).body.cursor as string
    const served: string[] = []
    const got: Frame[] = []
    // Each poll waits at some node (seen by its connection count); the event is published on another node.
    while (!ns.every((n) => served.includes(n.id)) || served.length < 6) {
      assert.ok(served.length < 30, `polls did not reach every node: ${served.join(', ')}`)
      const pending = poll(proxy.url, [ch], { cursor, timeout: 20 })
      let waiting: Node | undefined
      await until(() => (waiting = ns.find((n) => n.app.herald.connections.count('long-poll') === 1)) !== undefined, 'the poll to wait at a node', 10_000)
      served.push(waiting!.id)
      const other = ns.find((n) => n !== waiting)!
      assert.equal((await publish(other.url, ch, { n: got.length + 1 })).status, 201)
      const answer = await pending
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.equal(answer.body.recovery, undefined)
      got.push(...answer.body.events)
      cursor = answer.body.cursor
    }
    assert.deepEqual(offsets(got), oneTo(got.length), 'every event once, in order, across nodes')
    t.diagnostic(`${kind}: ${served.length} polls answered by ${JSON.stringify(served)}`)
  })

  void test(`${kind}: a long-poll that waits its whole POLL_TIMEOUT_MAX is answered by the node, not cut by the proxy (read timeout 3 s > 2 s, as shipped 45 s > 30 s); with the read timeout below it the proxy answers 504`, { skip }, async (t) => {
    const ns = await nodes(t, 2, { pollTimeoutMax: 2 })
    const ch = 'poll:long'
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns), set: readTimeouts(kind, '3s') })
    const cursor = (await poll(proxy.url, [ch], { timeout: 0 })).body.cursor as string
    const answer = await poll(proxy.url, [ch], { cursor, timeout: 2 })
    assert.equal(answer.status, 200, JSON.stringify(answer.body))
    assert.deepEqual(answer.body.events, [], 'the node answered: no events within the poll timeout')
    assert.equal(typeof answer.body.cursor, 'string')
    // The same poll through a proxy whose read timeout is below the poll's wait.
    const short = await useProxy(t, kind, { upstreams: upstreams(ns), set: readTimeouts(kind, '1s') })
    const cut = await fetch(`${short.url}/v1/poll?channel=${encodeURIComponent(ch)}&cursor=${encodeURIComponent(cursor)}&timeout=2`, { headers: { authorization: `Bearer ${token()}` } })
    await cut.arrayBuffer()
    assert.equal(cut.status, 504, 'the proxy gave up on the waiting poll')
  })

  void test(`${kind}: a draining node (readyz 503) leaves rotation; its clients are told to reconnect (1012) and resume through the proxy on other nodes with no loss (seed ${SEED})`, { skip }, async (t) => {
    const random = seededRandom(SEED)
    const ns = await nodes(t, 3)
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns) })
    const ch = `drain:${SEED}`
    const wss = Array.from({ length: 6 }, () => new ResumingWs(proxy.wsUrl, ch))
    for (const c of wss) { t.after(() => c.stop()); await c.started; await c.subscribed }
    const target = ns.find((n) => n.id === wss[0].nodes[0])!
    const sses: ResumingSse[] = []
    while (sses.length < 6 || !sses.some((s) => s.nodes[0] === target.id)) {
      assert.ok(sses.length < 15, 'no SSE stream reached the node to drain')
      const s = new ResumingSse(proxy.url, ch)
      t.after(() => s.stop())
      await s.started
      sses.push(s)
    }
    const poller = new Poller(proxy.url, ch)
    t.after(() => poller.stop())
    await poller.started

    const total = 150
    for (let i = 1; i <= total; i++) {
      if (i === 51) target.app.herald.drain()
      const res = await publish(proxy.url, ch, { i }, { id: `d-${i}` })
      assert.equal(res.status, 201, JSON.stringify(res.body))
      await sleep(2 + Math.floor(random() * 10)) // pacing only
    }
    const clients = [...wss, ...sses, poller]
    await until(() => clients.every((c) => c.events.length >= total), 'every client to have every event', 60_000)
      .catch((err: Error) => {
        const missing = (c: Resuming | Poller): number[] => oneTo(total).filter((o) => !offsets(c.events).includes(o))
        throw new Error(`${err.message}: ${clients.map((c) => `${c.name} ${c.events.length} (missing ${missing(c).join(',')})`).join(', ')}; poll log:\n${poller.log.slice(-40).join('\n')}`)
      })
    for (const c of clients) assert.deepEqual(offsets(c.events), oneTo(total), `${c.name}: every event once, in order`)

    for (const c of clients) c.stop()
    const ready = await fetch(`${target.url}/readyz`)
    assert.equal(ready.status, 503)
    for (const c of [...wss, ...sses]) {
      if (c.nodes[0] === target.id) {
        assert.equal(c.codes[0], 1012, `${c.name} on the draining node was told 1012`)
        assert.ok(c.nodes.length >= 2, `${c.name} reconnected`)
      }
      assert.ok(!c.nodes.slice(1).includes(target.id), `${c.name}: no reconnect went to the draining node (${c.nodes.join(' → ')})`)
      assert.deepEqual(c.refusals, [], `${c.name}: the proxy retried what the draining node refused; the client saw no refusal`)
    }
    assert.deepEqual(poller.refusals, [], 'long-poll: no refusal reached the client')
    // New connections through the proxy go to the other nodes.
    const fresh = await wsAttemptsNodes(t, proxy, 6)
    assert.ok(!fresh.includes(target.id), `new WebSockets avoid the draining node: ${fresh.join(', ')}`)
    if (kind === 'haproxy') {
      const n = ns.indexOf(target) + 1
      await until(async () => serverState(await haproxyCommand(proxy, 'show servers state herald'), `herald-${n}`) === 0, 'HAProxy to mark the draining node down (its /readyz check)', 20_000)
    }
    t.diagnostic(`${kind}: drained ${target.id}; reconnects ${[...wss, ...sses].filter((c) => c.nodes.length > 1).map((c) => c.nodes.join('→')).join(', ')}`)
  })

  void test(`${kind}: a reload lets old workers keep their connections only until the shipped shutdown bound, then clients reconnect to the new ones and resume with no loss`, { skip }, async (t) => {
    const ns = await nodes(t, 2)
    // The shipped bound is 30 s; 3 s here, the same setting.
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns), set: kind === 'nginx' ? { worker_shutdown_timeout: '3s' } : { 'hard-stop-after': '3s' } })
    const ch = 'reload:1'
    const wss = Array.from({ length: 3 }, () => new ResumingWs(proxy.wsUrl, ch))
    for (const c of wss) { t.after(() => c.stop()); await c.started; await c.subscribed }
    const sse = new ResumingSse(proxy.url, ch)
    t.after(() => sse.stop())
    await sse.started
    for (let i = 1; i <= 5; i++) assert.equal((await publish(proxy.url, ch, { i })).status, 201)
    const oldWorkers = childPids(proxy.pid)
    await proxy.reload()
    // The old workers finish within the bound, dropping what they still hold; every client comes back.
    await until(() => oldWorkers.every((pid) => !existsSync(`/proc/${pid}`)), 'the old workers to exit', 30_000)
    await until(() => [...wss, sse].every((c) => c.nodes.length >= 2), 'every client to reconnect', 30_000)
    for (let i = 6; i <= 10; i++) assert.equal((await publish(proxy.url, ch, { i })).status, 201)
    const clients = [...wss, sse]
    await until(() => clients.every((c) => c.events.length >= 10), 'every client to have every event', 30_000)
    for (const c of clients) assert.deepEqual(offsets(c.events), oneTo(10), `${c.name}: every event once, in order`)
    for (const c of wss) assert.equal(c.codes[0], 1006, `${c.name}: dropped by the old worker, not closed by Herald`)
    for (const c of clients) c.stop()
    t.diagnostic(`${kind}: reload; ${oldWorkers.length} old workers exited, ${clients.length} clients reconnected and resumed`)
  })

  void test(`${kind}: 5,000 concurrent WebSockets through the proxy, over 3 node processes, all receive a broadcast`, { skip }, async (t) => {
    const redis = await startRedis(t)
    const env = { JWT_SECRET: SECRET, REDIS_URL: redis.url, REDIS_PREFIX: 'herald-test', LOG_LEVEL: 'warn', CONNECT_RATE: '100000', CONNECT_BURST: '100000' }
    const servers: Server[] = []
    for (let i = 0; i < 3; i++) {
      const server = await startServer(env)
      cleanup(t, server)
      servers.push(server)
    }
    const proxy = await useProxy(t, kind, { upstreams: upstreams(servers) })
    const nodesRss = (): number[] => servers.map((s) => rssKiB(s.child.pid!))
    // Idle figures once the proxy has served a request (its workers are up).
    assert.equal((await fetch(`${proxy.url}/healthz`)).status, 200)
    const idle = { proxy: rssKiB(proxy.pid), nodes: nodesRss() }
    if (kind === 'haproxy') {
      const maxconn = Number(/^Maxconn: (\d+)/m.exec(await haproxyCommand(proxy, 'show info'))?.[1])
      t.diagnostic(`haproxy Maxconn ${maxconn} (from fd-hard-limit and the hard limit ${readFileSync(`/proc/${proxy.pid}/limits`, 'utf8').match(/Max open files\s+\d+\s+(\d+)/)?.[1] ?? '?'})`)
      assert.ok(maxconn >= 5000, `HAProxy's Maxconn (${maxconn}) is below 5,000: raise the hard open-file limit (ulimit -Hn)`)
    }
    const count = 5000
    const fleet = Fleet.start(t, { url: proxy.wsUrl, count, channel: 'load:all', secret: SECRET, concurrency: 100 })
    const ready = await fleet.next<FleetReady>('ready', undefined, 300_000)
    assert.equal(ready.failed, 0, `connections refused or failed: ${JSON.stringify(ready.failures)}`)
    assert.equal(ready.subscribed, count)
    assert.equal(Object.keys(ready.byNode).length, 3, `connections on every node: ${JSON.stringify(ready.byNode)}`)
    const rss = rssKiB(proxy.pid)
    const heraldRss = nodesRss()
    const fleetRss = rssKiB(fleet.child.pid!)
    for (let offset = 1; offset <= 2; offset++) {
      const sentAt = Date.now()
      assert.equal((await publish(proxy.url, 'load:all', { offset })).status, 201)
      const all = await fleet.next<FleetAll>('all', (l) => l.offset === offset, 60_000)
        .catch(async (err: Error) => { throw new Error(`${err.message}; fleet: ${JSON.stringify(await fleet.status())}`) })
      const lat = percentiles(all.at.map((at) => at - sentAt))
      t.diagnostic(`${kind}: broadcast ${offset} reached all ${count} sockets; publish-to-receive ms p50 ${lat.p50} p90 ${lat.p90} max ${lat.max}`)
    }
    const status = await fleet.status()
    assert.equal(status.open, count, `all sockets still open: ${JSON.stringify(status)}`)
    const mib = (kib: number): number => Math.round(kib / 1024)
    const perConn = (now: number, before: number, n: number): number => round((now - before) / n)
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)
    t.diagnostic(`${kind}: ${count} WebSockets opened in ${round(ready.ms / 1000)} s, per node ${JSON.stringify(Object.values(ready.byNode))}`)
    t.diagnostic(`${kind}: proxy RSS ${mib(idle.proxy)} → ${mib(rss)} MiB (+${perConn(rss, idle.proxy, count)} KiB per connection, master and workers)`)
    t.diagnostic(`${kind}: Herald RSS per node ${JSON.stringify(idle.nodes.map(mib))} → ${JSON.stringify(heraldRss.map(mib))} MiB (+${perConn(sum(heraldRss), sum(idle.nodes), count)} KiB per connection); client fleet ${mib(fleetRss)} MiB`)
    t.diagnostic(`${kind}: ${JSON.stringify({ kind, count, openSeconds: round(ready.ms / 1000), proxyRssMiB: [mib(idle.proxy), mib(rss)], heraldRssMiB: [idle.nodes.map(mib), heraldRss.map(mib)], fleetRssMiB: mib(fleetRss) })}`)
  })

  void test(`${kind}: an SSE request head as large as Herald allows (128 channels of 128 characters, and a cursor for them) passes the proxy`, { skip }, async (t) => {
    const ns = await nodes(t, 2)
    const proxy = await useProxy(t, kind, { upstreams: upstreams(ns) })
    const channels = Array.from({ length: 128 }, (_, i) => `big-${String(i).padStart(3, '0')}-`.padEnd(128, 'x'))
    const first = new SseProbe(proxy.url, channels, { token: token() })
    t.after(() => first.close())
    await first.until(() => first.frames().filter((f) => f.type === 'subscribed').length === 128, '128 subscriptions')
    for (const ch of channels.slice(0, 3)) assert.equal((await publish(ns[0].url, ch, { ch })).status, 201)
    await first.until(() => first.events().length === 3, 'the 3 events')
    first.close()
    const again = new SseProbe(proxy.url, channels, { token: token(), lastEventId: first.lastEventId })
    t.after(() => again.close())
    await again.until(() => again.frames().filter((f) => f.type === 'subscribed').length === 128, 'the resumed 128 subscriptions')
    assert.ok(again.frames().filter((f) => f.type === 'subscribed').every((f) => f.recovered === true), 'every channel resumed from the cursor')
    const head = new URLSearchParams(channels.map((c): [string, string] => ['channel', c])).toString().length + (first.lastEventId?.length ?? 0)
    // With the proxy's default buffer sizes the same request is refused.
    const small = await useProxy(t, kind, { upstreams: upstreams(ns), set: kind === 'nginx' ? { large_client_header_buffers: '4 8k' } : { 'tune.bufsize': '16384' } })
    const refused = new SseProbe(small.url, channels, { token: token() })
    await refused.until(() => refused.ended, 'the refusal')
    assert.ok(refused.status !== undefined && refused.status >= 400, `refused with default buffers (${String(refused.status)})`)
    t.diagnostic(`${kind}: a ${Math.round(head / 1024)} KiB query plus cursor passes; with the default buffers: ${String(refused.status)}`)
  })
}

if (proxySkipReason('nginx') === undefined && redisSkipReason() === undefined) {
  void test('nginx: with nginx\'s own proxy defaults (HTTP/1.0, buffering) and Herald\'s X-Accel-Buffering ignored, an SSE event waits for the end of the stream (the SSE test can fail)', async (t) => {
    const ns = await nodes(t, 1, { sseHeartbeatSeconds: 1 })
    const proxy = await useProxy(t, 'nginx', {
      upstreams: upstreams(ns),
      set: { proxy_buffering: 'on', proxy_http_version: '1.0' },
      append: { 'location /v1/sse': ['proxy_ignore_headers X-Accel-Buffering'] }
    })
    const proxied = new SseProbe(proxy.url, ['buf:1'], { token: token() })
    t.after(() => proxied.close())
    const direct = new SseProbe(ns[0].url, ['buf:1'], { token: token() })
    t.after(() => direct.close())
    await until(() => ns[0].app.herald.connections.count('sse') === 2, 'both streams open at the node')
    await direct.until(() => direct.frames().some((f) => f.type === 'subscribed'), 'the direct stream to subscribe')
    assert.equal((await publish(ns[0].url, 'buf:1', { x: 1 })).status, 201)
    await direct.until(() => direct.events().length === 1, 'the event on the direct stream')
    // The direct stream is the clock: three heartbeats after the event, the proxied stream has had nothing.
    const eventAt = direct.records.find((r) => r.data?.type === 'event')!.at
    await direct.until(() => direct.records.filter((r) => r.comment === 'hb' && r.at > eventAt).length >= 3, 'three heartbeats after the event')
    assert.equal(proxied.records.length, 0, 'nothing came through the buffering proxy, not even the subscribed frame')
    assert.equal(proxied.status, undefined, 'not even the response head')
    // The node ends the stream: the proxy flushes it all at the close.
    const drainedAt = performance.now()
    ns[0].app.herald.drain()
    await proxied.until(() => proxied.ended, 'the proxied stream to end')
    assert.equal(proxied.events().length, 1, 'the event arrives, at the end')
    assert.ok(proxied.records.every((r) => r.at >= drainedAt), 'everything arrived after the node ended the stream')
  })
}

// ---------------------------------------------------------------- helpers of the tests above

/** Publish-to-receive latency (ms) of `n` SSE events read through `base`, published directly to alternating nodes. */
async function sseLatency (t: TestContext, base: string, ns: Node[], channel: string, n: number): Promise<{ n: number, p50: number, p90: number, max: number }> {
  const sse = new SseProbe(base, [channel], { token: token() })
  t.after(() => sse.close())
  await sse.until(() => sse.frames().some((f) => f.type === 'subscribed'), 'the stream to open')
  const samples: number[] = []
  for (let i = 1; i <= n; i++) {
    const before = sse.records.length
    const sentAt = performance.now()
    const res = await publish(ns[i % ns.length].url, channel, { i })
    assert.equal(res.status, 201)
    await sse.until(() => sse.events(channel).length === i, `event ${i} while the stream is open`)
    const record = sse.records.find((r) => r.data?.type === 'event' && r.data.offset === i)!
    assert.equal(sse.ended, false, 'the stream is still open')
    // Nothing else came first: no heartbeat (or other traffic) pushed the event out.
    assert.deepEqual(sse.records.slice(before).map((r) => r.data?.type ?? r.comment), ['event'], 'the event is the first thing after the publish')
    samples.push(record.at - sentAt)
  }
  const p = percentiles(samples)
  return { n: p.n, p50: round(p.p50), p90: round(p.p90), max: round(p.max) }
}

/** A WebSocket and an SSE stream through the proxy, both subscribed, counting the pings the WebSocket receives. */
async function idlePair (t: TestContext, proxy: RunningProxy, channel: string): Promise<{ ws: WsClient, sse: SseProbe, pings: () => number }> {
  const ws = await WsClient.connect(proxy.wsUrl)
  t.after(() => ws.close())
  let pings = 0
  ws.socket.on('ping', () => { pings++ })
  await ws.subscribe(channel)
  const sse = new SseProbe(proxy.url, [channel], { token: token() })
  t.after(() => sse.close())
  await sse.until(() => sse.frames().some((f) => f.type === 'subscribed'), 'the SSE stream to subscribe')
  return { ws, sse, pings: () => pings }
}

/** The nodes of `n` new WebSockets opened (and closed) through the proxy. */
async function wsAttemptsNodes (t: TestContext, proxy: RunningProxy, n: number): Promise<string[]> {
  const found: string[] = []
  for (let i = 0; i < n; i++) {
    const ws = await WsClient.connect(proxy.wsUrl)
    t.after(() => ws.close())
    found.push(nodeOf((await ws.waitFor((f) => f.type === 'connected')).client))
  }
  return found
}

/** srv_op_state (2 = running, 0 = stopped/down) of `name` in `show servers state` output. */
function serverState (state: string, name: string): number | undefined {
  const line = state.split('\n').find((l) => l.split(' ')[3] === name)
  return line === undefined ? undefined : Number(line.split(' ')[5])
}

/** Bounds of the reconnecting clients below: refused attempts in a row, and streams or polls in all. */
const MAX_ATTEMPTS = 50
const MAX_STREAMS = 1000

interface Resuming { name: string, events: Frame[], nodes: string[], codes: number[], refusals: string[] }

/** A WebSocket client that reconnects through the proxy when closed and resubscribes from its last position. */
class ResumingWs implements Resuming {
  static count = 0
  readonly name = `ws#${++ResumingWs.count}`
  readonly events: Frame[] = []
  readonly nodes: string[] = []
  readonly codes: number[] = []
  /** Refused attempts: HTTP status and the start of the body, or the connection error. */
  readonly refusals: string[] = []
  readonly started: Promise<void>
  private position?: { offset: number, epoch: string }
  private current?: WebSocket
  private stopped = false

  constructor (private readonly wsUrl: string, private readonly channel: string) { this.started = this.connect() }

  private async connect (): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      if (attempt >= MAX_ATTEMPTS) { this.refusals.push(`gave up after ${attempt} refused attempts`); return }
      const res = await wsAttempt(this.wsUrl, { token: token() }).catch((err: Error) => ({ status: 0, body: err.message }))
      if ('status' in res) {
        this.refusals.push(`${res.status} ${JSON.stringify(res.body).slice(0, 120)}`)
        await sleep(Math.min(1000, 25 * 2 ** attempt)) // backoff pacing
        continue
      }
      const { ws, frames } = res
      this.current = ws
      const handle = (frame: Frame): void => {
        if (frame.type === 'connected') {
          this.nodes.push(nodeOf(frame.client))
          ws.send(JSON.stringify({ type: 'subscribe', channel: this.channel, since: this.position }))
        } else if (frame.type === 'subscribed') {
          this.position ??= { offset: frame.offset, epoch: frame.epoch }
          this.opened()
        } else if (frame.type === 'event' && frame.channel === this.channel) {
          this.events.push(frame)
          this.position = { offset: frame.offset, epoch: frame.epoch }
        }
      }
      for (const frame of frames) handle(frame)
      ws.on('message', (data) => { handle(JSON.parse(data.toString()) as Frame) })
      ws.once('close', (code) => {
        this.codes.push(code)
        if (!this.stopped) void this.connect()
      })
      return
    }
  }

  private opened: () => void = () => {}

  /** Resolves once the first subscription is confirmed. */
  get subscribed (): Promise<void> {
    return this.nodes.length > 0 && this.position !== undefined ? Promise.resolve() : new Promise((resolve) => { this.opened = resolve })
  }

  stop (): void { this.stopped = true; this.current?.close() }
}

/** An SSE client that reconnects through the proxy when its stream ends, with Last-Event-ID. */
class ResumingSse implements Resuming {
  static count = 0
  readonly name = `sse#${++ResumingSse.count}`
  readonly nodes: string[] = []
  readonly codes: number[] = []
  readonly refusals: string[] = []
  readonly started: Promise<void>
  private readonly done: Frame[] = []
  private current?: SseProbe
  private lastEventId?: string
  private stopped = false

  constructor (private readonly base: string, private readonly channel: string) {
    let opened!: () => void
    this.started = new Promise((resolve) => { opened = resolve })
    void this.run(opened)
  }

  get events (): Frame[] { return [...this.done, ...(this.current?.events(this.channel) ?? [])] }

  private async run (opened: () => void): Promise<void> {
    for (let attempt = 0, streams = 0; !this.stopped; streams++) {
      if (attempt >= MAX_ATTEMPTS || streams >= MAX_STREAMS) { this.refusals.push(`gave up after ${streams} streams, ${attempt} refused in a row`); return }
      const probe = new SseProbe(this.base, [this.channel], { token: token(), lastEventId: this.lastEventId })
      this.current = probe
      try {
        await probe.until(() => probe.ended || probe.connectedClient !== undefined, 'the stream to open', 30_000)
        if (probe.status !== 200) {
          this.refusals.push(`${String(probe.status ?? probe.error)} ${JSON.stringify(probe.body ?? '').slice(0, 120)}`)
          this.current = undefined
          await sleep(Math.min(1000, 25 * 2 ** attempt++)) // backoff pacing
          continue
        }
        attempt = 0
        this.nodes.push(nodeOf(probe.connectedClient!))
        await probe.until(() => probe.ended || probe.frames().some((f) => f.type === 'subscribed'), 'the subscription', 30_000)
        opened()
        await probe.until(() => probe.ended || this.stopped, 'the stream to end', 600_000)
      } catch (err) {
        // A stream that did not open or end in time: recorded (the test asserts there are none), then retried.
        if (!this.stopped) this.refusals.push((err as Error).message.slice(0, 200))
        probe.close()
      }
      const disconnect = probe.frames().find((f) => f.type === 'disconnect')
      if (disconnect !== undefined) this.codes.push(disconnect.code)
      this.done.push(...probe.events(this.channel))
      this.lastEventId = probe.lastEventId ?? this.lastEventId
      this.current = undefined
    }
  }

  stop (): void { this.stopped = true; this.current?.close() }
}

/** A long-poll loop through the proxy, carrying its cursor from answer to answer. */
class Poller {
  readonly name = 'poll'
  readonly events: Frame[] = []
  readonly refusals: string[] = []
  /** Each answer: the cursor polled from, the offsets answered, the cursor answered. */
  readonly log: string[] = []
  readonly started: Promise<void>
  private stopped = false

  constructor (private readonly base: string, private readonly channel: string) {
    let opened!: () => void
    this.started = new Promise((resolve) => { opened = resolve })
    void this.run(opened)
  }

  private async run (opened: () => void): Promise<void> {
    let cursor = (await poll(this.base, [this.channel], { timeout: 0 })).body.cursor as string
    opened()
    for (let polls = 0; !this.stopped; polls++) {
      if (polls >= MAX_STREAMS) { this.refusals.push(`gave up after ${polls} polls`); return }
      try {
        const res = await fetch(`${this.base}/v1/poll?channel=${encodeURIComponent(this.channel)}&timeout=5&cursor=${encodeURIComponent(cursor)}`, { headers: { authorization: `Bearer ${token()}` } })
        const text = await res.text()
        if (res.status !== 200) { this.refusals.push(`${res.status} ${text.slice(0, 120)}`); await sleep(100); continue }
        const body = JSON.parse(text) as { events: Frame[], cursor: string, recovery?: unknown }
        this.log.push(`${cursor} -> [${offsets(body.events).join(',')}] ${body.cursor}${body.recovery === undefined ? '' : ' ' + JSON.stringify(body.recovery)}`)
        this.events.push(...body.events)
        cursor = body.cursor
      } catch (err) {
        if (!this.stopped) { this.refusals.push((err as Error).message); await sleep(100) }
      }
    }
  }

  stop (): void { this.stopped = true }
}

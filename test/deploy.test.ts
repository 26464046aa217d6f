import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { test } from 'node:test'
import { parseAllDocuments, parse } from 'yaml'
import { EnvSchema, loadEnv, type Env } from '../src/config.js'
import { SECRET, startHerald } from './helper.js'

/*
 * What users copy must stay in step with Herald: deploy/docker-compose.yml and deploy/kubernetes/*.yaml name only
 * variables Herald has, with values it accepts; grace periods outlast the drain; probe paths and the autoscaling
 * metric exist on a real Herald; the memory limit holds MAX_CONNECTIONS at the measured cost per connection
 * (docs/benchmarks.md); proxy timeouts sit above the heartbeats and the long-poll wait.
 */

const root = new URL('../', import.meta.url)
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8')
type Doc = Record<string, any>

const KNOWN = new Set(Object.keys(EnvSchema.properties))
const secrets: Record<string, string> = { JWT_SECRET: SECRET, REDIS_URL: 'redis://redis:6379/0' }

/** Checks every name against the schema and the whole set through loadEnv (what the server does at start-up). */
function checkEnv (where: string, env: Record<string, string>): Env {
  for (const name of Object.keys(env)) assert.ok(KNOWN.has(name), `${where}: ${name} is not a Herald variable`)
  return loadEnv(env)
}

function seconds (value: string | number): number {
  if (typeof value === 'number') return value
  const m = /^(\d+)(s|m)?$/.exec(value)
  assert.ok(m !== null, `a duration: ${value}`)
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1)
}

function bytes (value: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|k|m)?$/.exec(value)
  assert.ok(m !== null, `a size: ${value}`)
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1024, m: 1024 ** 2 }[m[2] ?? ''] ?? 1
  return Number(m[1]) * unit
}

/** The measured idle cost (docs/benchmarks.md, scenario 3, Herald with the Redis bus): base RSS and KiB per connection. */
function measuredMemory (): { baseBytes: number, perConnectionBytes: number } {
  const doc = read('docs/benchmarks.md')
  const section = doc.slice(doc.indexOf('### 3. Memory per idle subscribed WebSocket connection'))
  const row = section.split('\n').find((l) => l.startsWith('| Herald, Redis bus |'))
  assert.ok(row !== undefined, 'the memory row of docs/benchmarks.md')
  const cells = row.split('|').map((c) => c.trim())
  return { baseBytes: Number(cells[3]) * 1024 ** 2, perConnectionBytes: Number(cells[5]) * 1024 }
}

test('docker-compose: each node\'s settings are valid, its grace period outlasts the drain, and the node names are nginx\'s upstreams', () => {
  const compose = parse(read('deploy/docker-compose.yml'), { merge: true }) as Doc
  const nodes = Object.keys(compose.services).filter((name) => name.startsWith('herald-'))
  assert.ok(nodes.length >= 2, 'several nodes')
  for (const name of nodes) {
    const service = compose.services[name] as Doc
    const env: Record<string, string> = {}
    for (const [k, v] of Object.entries(service.environment as Record<string, string>)) env[k] = secrets[k] ?? String(v)
    assert.match(String(service.environment.JWT_SECRET), /^\$\{JWT_SECRET:\?/, 'the secret is required, never defaulted')
    const parsed = checkEnv(name, env)
    assert.equal(parsed.NODE_ENV, 'production')
    // The server gives the drain DRAIN_TIMEOUT + 1 s before it stops waiting; compose must not SIGKILL before.
    assert.ok(seconds(service.stop_grace_period) > parsed.DRAIN_TIMEOUT + 1, `${name}: stop_grace_period ${service.stop_grace_period} vs DRAIN_TIMEOUT ${parsed.DRAIN_TIMEOUT}`)
    assert.equal(service.depends_on.redis.condition, 'service_healthy')
  }
  const conf = read('deploy/nginx/herald.conf')
  const upstream = /upstream herald \{([\s\S]*?)\n {4}\}/.exec(conf)?.[1] ?? ''
  const servers = [...upstream.matchAll(/^\s*server (\S+?):(\d+)/gm)].map((m) => ({ host: m[1], port: Number(m[2]) }))
  assert.deepEqual(servers.map((s) => s.host).sort(), nodes.sort())
  // The image listens on 3000 (Dockerfile ENV PORT=3000).
  assert.match(read('Dockerfile'), /ENV .*PORT=3000/)
  for (const s of servers) assert.equal(s.port, 3000)
  const mount = (compose.services.nginx.volumes as string[]).find((v) => v.includes('herald.conf'))!
  assert.ok(existsSync(new URL('deploy/' + mount.split(':')[0].replace(/^\.\//, ''), root)), mount)
})

test('Kubernetes: settings valid, grace > preStop + drain, probes and the HPA metric exist on a real Herald, selectors agree, memory holds MAX_CONNECTIONS', async (t) => {
  const docs = ['herald.yaml', 'ingress.yaml'].flatMap((f) => parseAllDocuments(read('deploy/kubernetes/' + f)).map((d) => d.toJS() as Doc))
  const kustomization = parse(read('deploy/kubernetes/kustomization.yaml')) as Doc
  assert.deepEqual(kustomization.resources, ['herald.yaml', 'ingress.yaml'])
  const of = (kind: string): Doc => { const d = docs.find((x) => x.kind === kind); assert.ok(d !== undefined, kind); return d }
  const deployment = of('Deployment')
  const pod = deployment.spec.template
  const container = pod.spec.containers[0] as Doc
  const env: Record<string, string> = {}
  for (const e of container.env as Array<{ name: string, value?: string, valueFrom?: unknown }>) {
    env[e.name] = e.value ?? secrets[e.name] ?? assert.fail(`${e.name}: no value and no test stand-in`)
  }
  const parsed = checkEnv('Deployment', env)

  // The pod's life at the end: preStop sleep, then SIGTERM: DRAIN_TIMEOUT + 1 s, then SIGKILL at the grace period.
  const preStop = Number((container.lifecycle.preStop.exec.command as string[])[1])
  assert.ok(pod.spec.terminationGracePeriodSeconds > preStop + parsed.DRAIN_TIMEOUT + 1, 'grace period outlasts preStop and the drain')
  assert.equal(container.ports[0].containerPort, parsed.PORT)
  assert.equal(container.readinessProbe.httpGet.path, '/readyz')
  assert.equal(container.livenessProbe.httpGet.path, '/healthz')

  // Selectors: the Service, the PDB and the Deployment's own select the pods; the HPA scales this Deployment.
  const labels = pod.metadata.labels as Record<string, string>
  const selects = (sel: Record<string, string>): boolean => Object.entries(sel).every(([k, v]) => labels[k] === v)
  assert.ok(selects(deployment.spec.selector.matchLabels))
  assert.ok(selects(of('Service').spec.selector))
  assert.ok(selects(of('PodDisruptionBudget').spec.selector.matchLabels))
  const hpa = of('HorizontalPodAutoscaler')
  assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name)
  assert.equal(of('Ingress').spec.rules[0].http.paths[0].backend.service.name, of('Service').metadata.name)

  // Memory: the limit holds MAX_CONNECTIONS idle connections at the measured cost; the HPA's connection target
  // stays below MAX_CONNECTIONS (pods scale out before any refuses a connection).
  const { baseBytes, perConnectionBytes } = measuredMemory()
  const needed = baseBytes + parsed.MAX_CONNECTIONS * perConnectionBytes
  assert.ok(bytes(container.resources.limits.memory) >= needed * 1.5, `memory limit ${container.resources.limits.memory} vs ${Math.round(needed / 1024 ** 2)} MiB needed at MAX_CONNECTIONS`)
  const podsMetric = (hpa.spec.metrics as Doc[]).find((m) => m.type === 'Pods')
  assert.ok(podsMetric !== undefined, 'the HPA scales on connections per pod')
  const connectionsTarget = Number(podsMetric.pods.target.averageValue)
  assert.ok(connectionsTarget < parsed.MAX_CONNECTIONS)

  // The probe paths answer 200 and the HPA's metric is exported, on a real Herald.
  const app = await startHerald(t)
  for (const path of [container.readinessProbe.httpGet.path, container.livenessProbe.httpGet.path]) {
    assert.equal((await fetch(app.url + path)).status, 200, path)
  }
  const metricName = podsMetric.pods.metric.name as string
  assert.match(await (await fetch(app.url + '/metrics')).text(), new RegExp(`^${metricName}\\{`, 'm'))
})

test('Kubernetes ingress: read timeouts above the heartbeats and the long-poll wait, no buffering, body size above MAX_BODY_BYTES', () => {
  const ingress = parseAllDocuments(read('deploy/kubernetes/ingress.yaml')).map((d) => d.toJS() as Doc).find((d) => d.kind === 'Ingress')!
  const a = ingress.metadata.annotations as Record<string, string>
  const deployment = parseAllDocuments(read('deploy/kubernetes/herald.yaml')).map((d) => d.toJS() as Doc).find((d) => d.kind === 'Deployment')!
  const env: Record<string, string> = { ...secrets }
  for (const e of deployment.spec.template.spec.containers[0].env as Array<{ name: string, value?: string }>) if (e.value !== undefined) env[e.name] = e.value
  const parsed = loadEnv(env)
  const readTimeout = Number(a['nginx.ingress.kubernetes.io/proxy-read-timeout'])
  for (const [name, value] of [['WS_PING_INTERVAL', parsed.WS_PING_INTERVAL], ['SSE_HEARTBEAT', parsed.SSE_HEARTBEAT], ['POLL_TIMEOUT_MAX', parsed.POLL_TIMEOUT_MAX]] as const) {
    assert.ok(readTimeout > value, `proxy-read-timeout ${readTimeout} s must be above ${name} (${value} s)`)
  }
  assert.equal(a['nginx.ingress.kubernetes.io/proxy-buffering'], 'off')
  assert.ok(bytes(a['nginx.ingress.kubernetes.io/proxy-body-size']) >= parsed.MAX_BODY_BYTES)
  assert.doesNotMatch(a['nginx.ingress.kubernetes.io/proxy-next-upstream'], /non_idempotent/, 'a POST is never retried on another pod')
})

test('Dockerfile: SIGTERM reaches node (exec form), the health check asks /readyz', () => {
  const dockerfile = read('Dockerfile')
  assert.match(dockerfile, /^CMD \["node", "dist\/src\/server\.js"\]$/m)
  assert.match(dockerfile, /HEALTHCHECK[\s\S]*\/readyz/)
  assert.match(dockerfile, /^USER node$/m)
})

/**
 * The admin console (docs/operations.md). Every call goes to the server API (/v1/api/…) with the key the operator
 * signed in with, kept in this tab's sessionStorage only. No framework: the page's elements are in
 * public/admin/index.html; this script fills them.
 */

import type { ConnectionInfo, NodeInfo } from '../../../src/control/views.js'
import type { NodeEvent as ServerNodeEvent } from '../../../src/control/events.js'

const KEY_STORAGE = 'herald.admin.key'
const REFRESH_MS = 1000
/** Samples kept for the charts: 3 minutes at one a second. */
const SAMPLES = 180

interface ApiError { code: string, message: string }
interface Reach { expected: number, answered: number }
/** The server API's rows, with the node each came from (routes/v1/api.ts adds it). */
type ConnectionRow = ConnectionInfo & { node: string }
type NodeEvent = ServerNodeEvent & { node: string }
interface HistoryEvent { offset: number, ts: number, event?: string, data: unknown }

class ApiFailure extends Error {
  constructor (readonly status: number, readonly body: ApiError) { super(body.message) }
}

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id)
  if (el === null) throw new Error(`#${id} is missing from the page`)
  return el as T
}

const apiBase = new URL('../v1/api/', location.href)
let key: string | null = sessionStorage.getItem(KEY_STORAGE)

async function api<T> (path: string, init: { method?: string, body?: unknown } = {}, withKey = key): Promise<T> {
  const headers: Record<string, string> = { 'x-api-key': withKey ?? '' }
  if (init.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(new URL(path, apiBase), {
    method: init.method ?? 'GET',
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer'
  })
  const text = await res.text()
  let body: unknown
  try { body = JSON.parse(text) } catch { body = { code: 'HTTP_' + res.status, message: text.slice(0, 200) || res.statusText } }
  if (!res.ok) {
    const err = new ApiFailure(res.status, body as ApiError)
    // The key was removed from API_KEYS while signed in: back to the sign-in form.
    if (res.status === 401 && withKey === key && key !== null) signOut('The key was refused: sign in again.')
    throw err
  }
  return body as T
}

function describe (err: unknown): string {
  if (err instanceof ApiFailure) return `${err.body.code}: ${err.body.message}`
  return err instanceof Error ? err.message : String(err)
}

function say (id: string, text: string, kind: '' | 'ok' | 'bad' = ''): void {
  const el = $(id)
  el.textContent = text
  el.classList.toggle('ok', kind === 'ok')
  el.classList.toggle('bad', kind === 'bad')
}

function cell (row: HTMLTableRowElement, text: string, col?: string, num = false): HTMLTableCellElement {
  const td = row.insertCell()
  td.textContent = text
  if (col !== undefined) td.dataset.col = col
  if (num) td.className = 'num'
  return td
}

function duration (seconds: number): string {
  const d = Math.floor(seconds / 86400)
  const h = Math.floor(seconds % 86400 / 3600)
  const m = Math.floor(seconds % 3600 / 60)
  const s = seconds % 60
  return d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s}s` : `${s}s`
}

// ---------------------------------------------------------------- sign-in

async function signIn (candidate: string): Promise<void> {
  const button = $('login-form').querySelector('button')!
  button.disabled = true
  say('login-error', '')
  try {
    await api('nodes', {}, candidate)
    key = candidate
    sessionStorage.setItem(KEY_STORAGE, candidate)
    $<HTMLInputElement>('key').value = ''
    showConsole()
  } catch (err) {
    const text = err instanceof ApiFailure && err.body.code === 'HERALD_ERR_BAD_API_KEY'
      ? 'Key refused: it is not one of the server\'s API_KEYS.'
      : err instanceof ApiFailure && err.body.code === 'HERALD_ERR_API_DISABLED'
        ? 'The server API is disabled on this node (no API_KEYS configured).'
        : 'Sign-in failed: ' + describe(err)
    say('login-error', text)
    $<HTMLInputElement>('key').focus()
  } finally {
    button.disabled = false
  }
}

function signOut (message = ''): void {
  key = null
  sessionStorage.removeItem(KEY_STORAGE)
  stopOverview()
  $('console').hidden = true
  $('logout').hidden = true
  $('login').hidden = false
  say('login-error', message)
  $<HTMLInputElement>('key').focus()
}

function showConsole (): void {
  $('login').hidden = true
  $('console').hidden = false
  $('logout').hidden = false
  show('overview')
  startOverview()
}

// ---------------------------------------------------------------- views

type View = 'overview' | 'channels' | 'connections' | 'events'

function show (view: View, focus = false): void {
  for (const button of document.querySelectorAll<HTMLButtonElement>('[data-view]')) {
    if (button.dataset.view === view) button.setAttribute('aria-current', 'page')
    else button.removeAttribute('aria-current')
  }
  for (const name of ['overview', 'channels', 'connections', 'events'] as const) $(`view-${name}`).hidden = name !== view
  if (view === 'events') void loadEvents()
  if (focus) $(`${view}-title`).focus()
}

// ---------------------------------------------------------------- overview: pushed by /v1/api/live, else /v1/api/nodes once a second

let timer: number | undefined
let running = false
/** The live stream being read, to abort on sign-out. */
let liveAbort: AbortController | undefined
const samples = { connections: [] as number[], deliveries: [] as number[], p99: [] as number[] }

function startOverview (): void {
  if (running) return
  running = true
  void readLive()
}

function stopOverview (): void {
  running = false
  if (timer !== undefined) clearTimeout(timer)
  timer = undefined
  liveAbort?.abort()
  liveAbort = undefined
}

/**
 * Reads `GET /v1/api/live` (Server-Sent Events, read with fetch: EventSource cannot send X-API-Key): an `update`
 * message a second with the nodes and the new events. If the stream cannot be opened (429: too many live streams,
 * an older server…), fails or ends (drain), the page falls back to asking `GET /v1/api/nodes` once a second.
 */
async function readLive (): Promise<void> {
  const abort = new AbortController()
  liveAbort = abort
  $('overview-status').dataset.feed = 'connecting'
  try {
    const res = await fetch(new URL('live', apiBase), {
      headers: { 'x-api-key': key ?? '', accept: 'text/event-stream' }, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer', signal: abort.signal
    })
    if (!res.ok || res.body === null) { void res.body?.cancel(); throw new Error(`live stream: HTTP ${res.status}`) }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
    let buffer = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let i: number
      while ((i = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, i)
        buffer = buffer.slice(i + 2)
        if (!onLiveMessage(block)) { void reader.cancel(); break }
      }
    }
  } catch {
    // Falls back to polling below.
  }
  if (!running || liveAbort !== abort) return
  liveAbort = undefined
  $('overview-status').dataset.feed = 'polling'
  void tick()
}

/** One SSE message of the live stream; false when the stream says it ends. */
function onLiveMessage (block: string): boolean {
  let event = 'message'
  let data = ''
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7)
    else if (line.startsWith('data: ')) data += line.slice(6)
  }
  if (event === 'end') return false
  if (event === 'update') {
    const reply = JSON.parse(data) as Reach & { nodes: NodeInfo[], events: NodeEvent[] }
    $('overview-status').dataset.feed = 'live'
    renderNodes(reply)
    if (reply.events.length > 0 && eventsLoaded) renderEvents(reply.events, false)
  } else if (event === 'error') {
    say('overview-status', 'Could not read the nodes: ' + (JSON.parse(data) as ApiError).message, 'bad')
  }
  return true
}

async function tick (): Promise<void> {
  try {
    const reply = await api<Reach & { nodes: NodeInfo[] }>('nodes')
    renderNodes(reply)
  } catch (err) {
    if (running) say('overview-status', 'Could not read the nodes: ' + describe(err), 'bad')
  }
  // The next request only once this one is answered: a slow cluster is not asked twice at once.
  if (running) timer = window.setTimeout(() => { void tick() }, REFRESH_MS)
}

function renderNodes (reply: Reach & { nodes: NodeInfo[] }): void {
  const body = $<HTMLTableElement>('nodes').tBodies[0]
  body.replaceChildren()
  let connections = 0
  let deliveries = 0
  // The cluster's p99 as the worst node's (percentiles do not add up).
  let p99 = 0
  for (const n of reply.nodes) {
    const row = body.insertRow()
    row.dataset.node = n.node
    cell(row, n.node + (n.worker !== undefined ? ` (worker ${n.worker})` : '') + (n.draining ? ' — draining' : ''), 'node')
    cell(row, n.version, 'version')
    cell(row, duration(n.uptime), 'uptime')
    cell(row, n.bus, 'bus')
    cell(row, String(n.connections.websocket), 'websocket', true)
    cell(row, String(n.connections.sse), 'sse', true)
    cell(row, String(n.connections['long-poll']), 'long-poll', true)
    cell(row, String(n.channels), 'channels', true)
    cell(row, String(n.subscriptions), 'subscriptions', true)
    cell(row, n.deliveriesPerSecond.toFixed(1), 'deliveries', true)
    cell(row, n.latencyP50 === null ? '–' : n.latencyP50.toFixed(2), 'p50', true)
    cell(row, n.latencyP99 === null ? '–' : n.latencyP99.toFixed(2), 'p99', true)
    if (n.latencyP99 !== null) p99 = Math.max(p99, n.latencyP99)
    connections += n.connections.websocket + n.connections.sse + n.connections['long-poll']
    deliveries += n.deliveriesPerSecond
  }
  const missing = reply.expected - reply.answered
  const feed = $('overview-status').dataset.feed === 'live' ? 'live' : 'polled'
  say('overview-status', `${reply.answered} node${reply.answered === 1 ? '' : 's'} answered` +
    (missing > 0 ? ` — ${missing} did not answer in time` : '') + ` · ${feed} ${new Date().toLocaleTimeString()}`, missing > 0 ? 'bad' : '')
  push(samples.connections, connections)
  push(samples.deliveries, deliveries)
  $('now-connections').textContent = String(connections)
  $('now-deliveries').textContent = deliveries.toFixed(1)
  chart('chart-connections', samples.connections, 'Connections')
  chart('chart-deliveries', samples.deliveries, 'Deliveries per second')
  push(samples.p99, p99)
  $('now-p99').textContent = p99.toFixed(2)
  chart('chart-p99', samples.p99, 'Publish-to-deliver p99 in milliseconds')
}

function push (series: number[], value: number): void {
  series.push(value)
  if (series.length > SAMPLES) series.shift()
}

/**
 * A polyline of the samples so far (at most SAMPLES: the last 3 minutes), oldest on the left, newest on the right,
 * scaled to a quarter above the largest value shown.
 */
function chart (id: string, series: number[], label: string): void {
  const svg = document.getElementById(id) as unknown as SVGSVGElement
  const line = svg.querySelector('polyline')!
  const highest = Math.max(0, ...series)
  const top = Math.max(1, highest * 1.25)
  const step = 300 / Math.max(1, series.length - 1)
  line.setAttribute('points', series.map((v, i) => `${(i * step).toFixed(1)},${(79 - v / top * 76).toFixed(1)}`).join(' '))
  svg.dataset.samples = String(series.length)
  const now = series[series.length - 1] ?? 0
  const span = series.length < 60 ? `${series.length} s` : `${Math.round(series.length / 60)} min`
  svg.setAttribute('aria-label', `${label} over the last ${span}: now ${Number(now.toFixed(1))}, highest ${Number(highest.toFixed(1))}`)
  const caption = document.getElementById(id + '-span')
  if (caption !== null) caption.textContent = `last ${span} · highest ${Number(highest.toFixed(1))}`
}

// ---------------------------------------------------------------- channels

let openChannel: string | null = null
let oldestShown = 0

async function listChannels (): Promise<void> {
  const pattern = $<HTMLInputElement>('pattern').value.trim()
  say('channels-status', 'Loading…')
  try {
    const reply = await api<Reach & { channels: Array<{ channel: string, subscribers: number }>, truncated: boolean }>(
      'channels' + (pattern === '' ? '' : '?pattern=' + encodeURIComponent(pattern)))
    const body = $<HTMLTableElement>('channels').tBodies[0]
    body.replaceChildren()
    for (const c of reply.channels) {
      const row = body.insertRow()
      row.dataset.channel = c.channel
      const open = document.createElement('button')
      open.type = 'button'
      open.className = 'link'
      open.textContent = c.channel
      open.setAttribute('aria-label', `Open channel ${c.channel}`)
      open.addEventListener('click', () => { void openChannelView(c.channel) })
      row.insertCell().append(open)
      cell(row, String(c.subscribers), 'subscribers', true)
    }
    say('channels-status', `${reply.channels.length} channel${reply.channels.length === 1 ? '' : 's'}` + (reply.truncated ? ' (truncated: narrow the pattern)' : '') +
      (reply.answered < reply.expected ? ` — ${reply.expected - reply.answered} node(s) did not answer` : ''))
  } catch (err) {
    say('channels-status', describe(err), 'bad')
  }
}

async function openChannelView (channel: string): Promise<void> {
  openChannel = channel
  $('channel-detail').hidden = false
  $('channel-title').textContent = channel
  $('history').replaceChildren()
  say('publish-status', '')
  $('channel-presence').textContent = ''
  await Promise.all([loadHistory(null), loadPresence(channel)])
  $('channel-title').focus()
}

/** Who is subscribed, cluster-wide, where the channel's namespace keeps presence. */
async function loadPresence (channel: string): Promise<void> {
  try {
    const p = await api<{ members: Array<{ sub: string, connections: unknown[] }>, count: { members: number, connections: number } }>(`presence?channel=${encodeURIComponent(channel)}`)
    if (channel !== openChannel) return
    const shown = p.members.slice(0, 50).map((m) => `${m.sub} (${m.connections.length})`).join(', ')
    $('channel-presence').textContent = `Presence: ${p.count.members} members, ${p.count.connections} connections` +
      (shown === '' ? '' : `: ${shown}${p.members.length > 50 ? ', …' : ''}`)
  } catch (err) {
    if (channel === openChannel) $('channel-presence').textContent = 'Presence: ' + describe(err)
  }
}

/** The newest page of history (before === null), or the page before the oldest event shown. */
async function loadHistory (before: number | null, pageSize = 20): Promise<void> {
  const channel = openChannel
  if (channel === null) return
  try {
    const top = await api<{ epoch: string, offset: number, earliest: number }>(`history?channel=${encodeURIComponent(channel)}&limit=0`)
    const end = before ?? top.offset + 1
    const since = Math.max(top.earliest - 1, end - 1 - pageSize, 0)
    const page = await api<{ epoch: string, offset: number, earliest: number, events: HistoryEvent[] }>(`history?channel=${encodeURIComponent(channel)}&since=${since}&limit=${end - 1 - since}`)
    if (channel !== openChannel) return
    $('channel-meta').textContent = `epoch ${page.epoch} · newest offset ${page.offset} · history from offset ${page.earliest}`
    const list = $('history')
    if (before === null) list.replaceChildren()
    const items = page.events.map((e) => {
      const li = document.createElement('li')
      li.value = e.offset
      li.textContent = `${new Date(e.ts).toLocaleTimeString()} ${e.event ?? 'message'} ${JSON.stringify(e.data)}`
      return li
    })
    list.prepend(...items)
    oldestShown = page.events[0]?.offset ?? end
    $('history-older').hidden = oldestShown <= page.earliest
    if (page.events.length === 0 && before === null) {
      const li = document.createElement('li')
      li.className = 'empty'
      li.textContent = 'No events in history.'
      list.append(li)
    }
  } catch (err) {
    $('channel-meta').textContent = 'History: ' + describe(err)
  }
}

async function publishTest (): Promise<void> {
  const channel = openChannel
  if (channel === null) return
  let data: unknown
  try {
    data = JSON.parse($<HTMLTextAreaElement>('publish-data').value)
  } catch {
    say('publish-status', 'Data is not valid JSON.', 'bad')
    $('publish-data').focus()
    return
  }
  const event = $<HTMLInputElement>('publish-event').value.trim()
  try {
    const reply = await api<{ results: Array<{ channel: string, offset?: number, error?: ApiError }> }>('broadcast', {
      method: 'POST', body: { channels: [channel], data, ...(event === '' ? {} : { event }) }
    })
    const result = reply.results[0]
    if (result.error !== undefined) { say('publish-status', `${result.error.code}: ${result.error.message}`, 'bad'); return }
    say('publish-status', `Published at offset ${result.offset}.`, 'ok')
    await loadHistory(null)
  } catch (err) {
    say('publish-status', describe(err), 'bad')
  }
}

// ---------------------------------------------------------------- connections

let shownSub: string | null = null

async function findConnections (): Promise<void> {
  const sub = $<HTMLInputElement>('sub').value.trim()
  if (sub === '') { say('connections-status', 'Enter a subject.', 'bad'); $('sub').focus(); return }
  shownSub = sub
  say('connections-status', 'Loading…')
  try {
    const reply = await api<Reach & { connections: ConnectionRow[] }>('connections?sub=' + encodeURIComponent(sub))
    if (shownSub !== sub) return
    const body = $<HTMLTableElement>('connections').tBodies[0]
    body.replaceChildren()
    for (const c of reply.connections) {
      const row = body.insertRow()
      row.dataset.client = c.client
      cell(row, c.node, 'node')
      cell(row, c.client, 'client')
      cell(row, c.transport, 'transport')
      cell(row, new Date(c.since).toLocaleString(), 'since')
      cell(row, String(c.subscriptions), 'subscriptions', true)
      cell(row, String(c.buffered), 'buffered', true)
      const close = document.createElement('button')
      close.type = 'button'
      close.className = 'secondary'
      close.textContent = 'Disconnect'
      close.setAttribute('aria-label', `Disconnect ${c.client}`)
      close.addEventListener('click', () => { void disconnect(sub, c.client) })
      row.insertCell().append(close)
    }
    const n = reply.connections.length
    say('connections-status', `${n} connection${n === 1 ? '' : 's'} of ${sub}` +
      (reply.answered < reply.expected ? ` — ${reply.expected - reply.answered} node(s) did not answer` : ''))
    $<HTMLButtonElement>('disconnect-all').disabled = false
    $<HTMLButtonElement>('revoke').disabled = false
  } catch (err) {
    say('connections-status', describe(err), 'bad')
  }
}

async function disconnect (sub: string, client?: string): Promise<void> {
  try {
    const reply = await api<Reach & { closed: number }>('disconnect', { method: 'POST', body: { sub, ...(client === undefined ? {} : { client }), reason: 'disconnected by an operator' } })
    await findConnections()
    say('connections-status', `Closed ${reply.closed} connection${reply.closed === 1 ? '' : 's'} of ${sub} (code 4504).`, 'ok')
  } catch (err) {
    say('connections-status', describe(err), 'bad')
  }
}

async function revoke (sub: string): Promise<void> {
  try {
    const reply = await api<Reach & { closed: number, revoked: { until: number } }>('revoke', { method: 'POST', body: { sub } })
    await findConnections()
    say('connections-status', `Revoked the tokens of ${sub} until ${new Date(reply.revoked.until * 1000).toLocaleString()}; closed ${reply.closed} connection${reply.closed === 1 ? '' : 's'} (code 4505).`, 'ok')
  } catch (err) {
    say('connections-status', describe(err), 'bad')
  }
}

// ---------------------------------------------------------------- events tail

const EVENTS_SHOWN = 200
/** The table holds the tail already: the live stream's new events go on top of it. */
let eventsLoaded = false

async function loadEvents (): Promise<void> {
  say('events-status', 'Loading…')
  try {
    const reply = await api<Reach & { events: NodeEvent[] }>(`events?limit=${EVENTS_SHOWN}`)
    renderEvents(reply.events, true)
    eventsLoaded = true
    say('events-status', `${reply.events.length} event${reply.events.length === 1 ? '' : 's'}` +
      (reply.answered < reply.expected ? ` — ${reply.expected - reply.answered} node(s) did not answer` : ''))
  } catch (err) {
    say('events-status', describe(err), 'bad')
  }
}

/** Shows `events` (newest first): in place of the table's rows, or above them (newer ones from the live feed). */
function renderEvents (events: NodeEvent[], replace: boolean): void {
  const body = $<HTMLTableElement>('events').tBodies[0]
  if (replace) body.replaceChildren()
  const shown = new Set([...body.rows].map((r) => r.dataset.key))
  const rows = events.filter((e) => !shown.has(`${e.node}:${e.seq}`)).map((e) => {
    const row = document.createElement('tr')
    row.dataset.key = `${e.node}:${e.seq}`
    row.dataset.kind = e.kind
    row.dataset.node = e.node
    cell(row, new Date(e.ts).toLocaleTimeString(), 'time')
    cell(row, e.node, 'node')
    cell(row, e.kind, 'kind')
    cell(row, e.code ?? '', 'code')
    cell(row, e.detail, 'detail')
    return row
  })
  body.prepend(...rows)
  while (body.rows.length > EVENTS_SHOWN) body.deleteRow(-1)
}

// ---------------------------------------------------------------- wiring

function submit (id: string, fn: () => void): void {
  $(id).addEventListener('submit', (e) => { e.preventDefault(); fn() })
}

function start (): void {
  submit('login-form', () => {
    const candidate = $<HTMLInputElement>('key').value.trim()
    if (candidate === '') { say('login-error', 'Enter a key.'); return }
    void signIn(candidate)
  })
  $('logout').addEventListener('click', () => { signOut() })
  for (const button of document.querySelectorAll<HTMLButtonElement>('[data-view]')) {
    button.addEventListener('click', () => { show(button.dataset.view as View, true) })
  }
  submit('channels-form', () => { void listChannels() })
  submit('publish-form', () => { void publishTest() })
  $('history-older').addEventListener('click', () => { void loadHistory(oldestShown) })
  submit('connections-form', () => { void findConnections() })
  $('disconnect-all').addEventListener('click', () => { if (shownSub !== null) void disconnect(shownSub) })
  $('revoke').addEventListener('click', () => { if (shownSub !== null) void revoke(shownSub) })
  $('events-refresh').addEventListener('click', () => { void loadEvents() })
  if (key !== null) showConsole()
  else $<HTMLInputElement>('key').focus()
}

start()

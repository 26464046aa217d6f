// The Herald demo: a chat room with presence and a live counter, on the client library served at /client/herald.js.
// Plain DOM, no framework. Query parameters: ?name=alice, ?transports=sse,long-poll (force transports).
import { createClient } from '/client/herald.js'

const CHAT = 'chat:lobby'
const COUNTER = 'demo:counter'
const $ = (id) => document.getElementById(id)
const params = new URLSearchParams(location.search)
const clean = (s) => (s || '').replace(/[^A-Za-z0-9_.@-]/g, '').slice(0, 32)
const name = clean(params.get('name')) || clean(sessionStorage.getItem('herald-demo-name')) || 'guest-' + Math.random().toString(36).slice(2, 6)
sessionStorage.setItem('herald-demo-name', name)
const transports = params.get('transports')?.split(',').map((t) => t.trim()).filter(Boolean)

/** The demo's token comes from the development-only route (absent when NODE_ENV=production). */
async function getToken () {
  const res = await fetch('/dev/token?sub=' + encodeURIComponent(name))
  if (!res.ok) throw new Error('GET /dev/token answered ' + res.status + ' (it exists only in development)')
  return (await res.json()).token
}

const herald = createClient({ url: location.origin, getToken, ...(transports?.length ? { transports } : {}) })
// For the browser tests (and the curious, in the console).
const demo = { herald, name, chat: [], counter: [], states: [], members: new Map() }
window.heraldDemo = demo
$('me').textContent = name

// ---------------------------------------------------------------- connection badge

function showStatus () {
  const state = $('state')
  state.textContent = herald.state
  state.dataset.state = herald.state
  $('transport').textContent = herald.transport ?? '—'
  const pending = herald.pendingPublishes
  $('pending').hidden = pending === 0
  $('pending').textContent = pending + (pending === 1 ? ' message waits' : ' messages wait') + ' for the connection'
}
let wasDown = false
herald.on('state', (change) => {
  demo.states.push(change)
  if (change.to === 'reconnecting') wasDown = true
  showStatus()
})
herald.on('transport', showStatus)
herald.on('connected', showStatus)
herald.on('reconnect', ({ delay }) => { $('state').title = 'next attempt in ' + delay + ' ms' })
showStatus()

// ---------------------------------------------------------------- chat

function line (className, build) {
  const list = $('messages')
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 30
  const li = document.createElement('li')
  li.className = className
  build(li)
  list.append(li)
  while (list.children.length > 200) list.firstElementChild.remove()
  if (stick) list.scrollTop = list.scrollHeight
}

function system (text) { line('system', (li) => { li.textContent = text }) }

function message (e) {
  const data = e.data && typeof e.data === 'object' ? e.data : { text: String(e.data) }
  line(data.from === name ? 'mine' : '', (li) => {
    const from = document.createElement('span')
    from.className = 'from'
    from.textContent = data.from || '?'
    const time = document.createElement('time')
    time.textContent = new Date(e.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    li.append(from, document.createTextNode(String(data.text ?? '')), time)
  })
}

/** Subscribes from a little before the newest offset, so the last events are replayed and then live ones follow. */
async function recent (channel, count) {
  try {
    const top = await herald.history(channel, { limit: 0 })
    return { since: { offset: Math.max(top.offset - count, top.earliest - 1, 0), epoch: top.epoch } }
  } catch {
    return {}
  }
}

const chat = herald.subscribe(CHAT, await recent(CHAT, 30))
chat.on('event', (e) => { demo.chat.push(e); message(e) })
chat.on('subscribed', () => {
  // (On SSE a new subscription reopens the stream and confirms the others again: not a reconnection.)
  if (wasDown) { wasDown = false; system('reconnected — nothing missed') }
  loadPresence()
})
chat.on('recovery-failed', (f) => { wasDown = false; system('some messages could not be recovered (' + f.reason + ')') })
chat.on('join', (j) => {
  const known = demo.members.has(j.sub)
  demo.members.set(j.sub, demo.members.get(j.sub) ?? { sub: j.sub, connections: [] })
  renderMembers()
  if (!known && j.sub !== name) system(j.sub + ' joined')
})
chat.on('leave', (l) => {
  if (demo.members.delete(l.sub)) { renderMembers(); system(l.sub + ' left') }
})
chat.on('error', (err) => system('chat: ' + err.message))

$('chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const input = $('chat-input')
  const text = input.value.trim()
  if (text === '') return
  input.value = ''
  herald.publish(CHAT, { from: name, text }, { event: 'message' })
    .catch((err) => system('not sent: ' + err.message))
    .finally(showStatus)
  showStatus()
})

// ---------------------------------------------------------------- presence

function renderMembers () {
  const list = $('members')
  list.replaceChildren()
  const members = [...demo.members.values()].sort((a, b) => a.sub.localeCompare(b.sub))
  for (const m of members) {
    const li = document.createElement('li')
    li.textContent = m.sub
    if (m.sub === name) li.className = 'me'
    if (m.connections.length > 1) {
      const tabs = document.createElement('span')
      tabs.className = 'tabs'
      tabs.textContent = '×' + m.connections.length
      li.append(tabs)
    }
    list.append(li)
  }
  $('online-count').textContent = String(members.length)
}

async function loadPresence () {
  const note = $('presence-note')
  try {
    const p = await herald.presence(CHAT)
    demo.members = new Map(p.members.map((m) => [m.sub, m]))
    renderMembers()
    note.hidden = herald.transport !== 'long-poll'
    note.textContent = 'Long-poll clients are not presence members; the list refreshes every 5 s.'
  } catch (err) {
    note.hidden = false
    note.textContent = err.code === 'HERALD_ERR_PRESENCE_DISABLED'
      ? 'Presence is off for chat:*. Start Herald with NAMESPACES_FILE=deploy/namespaces.yaml (npm start does) to see who is online.'
      : 'Presence unavailable: ' + err.message
  }
}
// Join/leave frames reach WebSocket and SSE subscribers; on long-poll, refresh the list now and then.
setInterval(() => { if (herald.state === 'connected' && herald.transport === 'long-poll') loadPresence() }, 5000)

// ---------------------------------------------------------------- live counter

function showCounter (e) {
  const value = e.data && typeof e.data === 'object' && 'value' in e.data ? e.data.value : e.data
  $('counter').textContent = typeof value === 'number' || typeof value === 'string' ? String(value) : JSON.stringify(value)
  $('counter-meta').textContent = 'offset ' + e.offset + ' · ' + new Date(e.ts).toLocaleTimeString()
  const li = document.createElement('li')
  const left = document.createElement('span')
  left.textContent = '#' + e.offset + ' ' + JSON.stringify(e.data)
  const right = document.createElement('span')
  right.textContent = new Date(e.ts).toLocaleTimeString()
  li.append(left, right)
  $('counter-log').prepend(li)
  while ($('counter-log').children.length > 6) $('counter-log').lastElementChild.remove()
}

const counter = herald.subscribe(COUNTER, await recent(COUNTER, 1))
counter.on('event', (e) => { demo.counter.push(e); showCounter(e) })
counter.on('recovery-failed', () => { $('counter-meta').textContent = 'history trimmed; showing live values' })

$('bump').addEventListener('click', () => {
  const last = demo.counter.at(-1)
  const current = Number(last?.data?.value ?? last?.data ?? 0)
  herald.publish(COUNTER, { value: (Number.isFinite(current) ? current : 0) + 1, by: name })
    .catch((err) => { $('counter-meta').textContent = 'not published: ' + err.message })
})

$('curl').textContent = [
  `TOKEN=$(curl -s '${location.origin}/dev/token?sub=curl' | sed -E 's/.*"token":"([^"]+)".*/\\1/')`,
  `curl -X POST '${location.origin}/v1/channels/${COUNTER}/events' \\`,
  '  -H "authorization: Bearer $TOKEN" -H \'content-type: application/json\' \\',
  '  -d \'{"data":{"value":42}}\''
].join('\n')

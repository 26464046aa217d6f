import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import type { BrowserContext, Page } from 'playwright-core'
import { chromiumSkipReason, sharedBrowser } from './support/chromium.js'
import { publish, startHerald, type TestApp } from './helper.js'

// The demo page (public/) and the client bundle (/client/herald.js) in a real headless Chromium against a real
// Herald. WebSocket and SSE are made to fail in the browser itself (Playwright closes the page's WebSocket, aborts
// its SSE requests) so that the fallbacks run exactly as they would behind a hostile proxy.

// Page-side code (page.evaluate / waitForFunction) runs in the browser; the test project has no DOM typings.
declare const window: any
declare const document: any

const SCREENSHOT = new URL('../docs/demo.png', import.meta.url)

const skip = chromiumSkipReason('the browser tests')
const browser = sharedBrowser(skip)

const CONFIG = { devToken: true, namespaces: { namespaces: { chat: { presence: true, joinLeave: true } } }, presence: { ttlSeconds: 30, batchMs: 50 } }

async function herald (t: TestContext): Promise<TestApp> {
  return await startHerald(t, { config: CONFIG })
}

async function open (t: TestContext, url: string, setup?: (context: BrowserContext, page: Page) => Promise<void>): Promise<Page> {
  const context = await browser().newContext({ viewport: { width: 1120, height: 720 } })
  t.after(async () => { await context.close() })
  const page = await context.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(err.message))
  t.after(() => { assert.deepEqual(problems, [], 'no uncaught error in the page') })
  await setup?.(context, page)
  await page.goto(url)
  return page
}

/** What the page's client says: state, transport, and the offsets the app received per channel. */
async function status (page: Page): Promise<{ state: string, transport: string | null, badge: string, badgeTransport: string, chat: number[], counter: number[] }> {
  return await page.evaluate(() => {
    const demo = window.heraldDemo
    return {
      state: demo.herald.state,
      transport: demo.herald.transport,
      badge: document.getElementById('state')!.textContent!,
      badgeTransport: document.getElementById('transport')!.textContent!,
      chat: demo.chat.map((e: { offset: number }) => e.offset),
      counter: demo.counter.map((e: { offset: number }) => e.offset)
    }
  })
}

async function waitConnected (page: Page, transport: string): Promise<void> {
  await page.waitForFunction((t) => {
    const demo = window.heraldDemo
    return demo?.herald.state === 'connected' && demo.herald.transport === t &&
      document.getElementById('state')?.textContent === 'connected' && document.getElementById('transport')?.textContent === t
  }, transport, { timeout: 8000 })
}

async function publishCounter (base: string, values: number[]): Promise<void> {
  for (const value of values) assert.equal((await publish(base, 'demo:counter', { value })).status, 201)
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

test('the demo page connects over WebSocket, shows a value published over REST, and chats', { skip }, async (t) => {
  const h = await herald(t)
  const page = await open(t, `${h.url}/?name=alice`)
  await waitConnected(page, 'websocket')
  const s = await status(page)
  assert.equal(s.badge, 'connected')
  assert.equal(s.badgeTransport, 'websocket')
  await publishCounter(h.url, [42])
  await page.waitForFunction(() => document.getElementById('counter')?.textContent === '42', undefined, { timeout: 5000 })
  assert.match(await page.textContent('#counter-meta') ?? '', /offset 1/)
  await page.fill('#chat-input', 'hello from the browser')
  await page.click('button[type=submit]')
  await page.waitForFunction(() => document.getElementById('messages')?.textContent?.includes('hello from the browser'), undefined, { timeout: 5000 })
  // It went through the client's publish (a WebSocket frame) and is stored once.
  const stored = await fetch(`${h.url}/v1/channels/chat:lobby/events?since=0`, { headers: { authorization: `Bearer ${await devToken(h.url)}` } }).then(async (r) => await r.json() as { events: Array<{ data: { from: string, text: string } }> })
  assert.deepEqual(stored.events.map((e) => e.data), [{ from: 'alice', text: 'hello from the browser' }])
})

async function devToken (base: string): Promise<string> {
  const res = await fetch(`${base}/dev/token?sub=checker`)
  assert.equal(res.status, 200)
  return (await res.json() as { token: string }).token
}

test('without WebSocket the page falls back to SSE, without SSE too to long-poll; every event arrives once, in order, also across a reconnection', { skip }, async (t) => {
  const h = await herald(t)
  // The page's WebSocket is intercepted and closed before the server ever sees it (like a proxy that drops upgrades).
  const noWebSocket = async (context: BrowserContext): Promise<void> => {
    await context.routeWebSocket(/\/v1\/ws/, (ws) => { void ws.close({ code: 1011, reason: 'blocked by the test' }) })
  }
  const ssePage = await open(t, `${h.url}/?name=sse-user`, noWebSocket)
  await waitConnected(ssePage, 'sse')
  await publishCounter(h.url, [1, 2, 3, 4, 5])
  await ssePage.waitForFunction(() => window.heraldDemo.counter.length === 5, undefined, { timeout: 5000 })
  assert.deepEqual((await status(ssePage)).counter, range(1, 5))

  const pollPage = await open(t, `${h.url}/?name=poll-user`, async (context) => {
    await noWebSocket(context)
    await context.route(/\/v1\/sse/, async (route) => { await route.abort('connectionrefused') })
  })
  await waitConnected(pollPage, 'long-poll')
  await publishCounter(h.url, [6, 7])
  // The page replays the newest value at load (offset 5), then follows live.
  await pollPage.waitForFunction(() => window.heraldDemo.counter.length === 3, undefined, { timeout: 5000 })

  // Both lose their connection: the server evicts every connection (close 4001: reconnect and resume) and, for a
  // while, the long-poll page's requests fail at the network level. Events published meanwhile arrive afterwards.
  const pollBlock = async (route: { abort: (code: string) => Promise<void> }): Promise<void> => { await route.abort('internetdisconnected') }
  await pollPage.context().route(/\/v1\/poll/, pollBlock)
  h.app.herald.connections.closeAll(4001, 'evicted by the test')
  await publishCounter(h.url, [8, 9, 10])
  await pollPage.waitForFunction(() => window.heraldDemo.herald.state === 'reconnecting', undefined, { timeout: 5000 })
  await pollPage.context().unroute(/\/v1\/poll/, pollBlock)
  await publishCounter(h.url, [11])
  await ssePage.waitForFunction(() => window.heraldDemo.counter.length === 11, undefined, { timeout: 8000 })
  await pollPage.waitForFunction(() => window.heraldDemo.counter.length === 7, undefined, { timeout: 8000 })
  for (const page of [ssePage, pollPage]) {
    const lost = await page.evaluate(() => window.heraldDemo.states.filter((s: { to: string }) => s.to === 'reconnecting').map((s: { reason: string }) => s.reason))
    assert.ok(lost.length >= 1, 'the page lost its connection and reconnected')
  }
  await new Promise((resolve) => setTimeout(resolve, 100))
  const sse = await status(ssePage)
  const poll = await status(pollPage)
  assert.deepEqual(sse.counter, range(1, 11), 'SSE page: exactly once, in order')
  assert.deepEqual(poll.counter, range(5, 11), 'long-poll page: exactly once, in order')
  assert.equal(sse.transport, 'sse')
  assert.equal(poll.transport, 'long-poll')
  assert.equal(await pollPage.textContent('#counter'), '11')
  // Publishing from a fallback transport goes over REST.
  await pollPage.fill('#chat-input', 'sent over REST')
  await pollPage.click('button[type=submit]')
  await ssePage.waitForFunction(() => document.getElementById('messages')?.textContent?.includes('sent over REST'), undefined, { timeout: 5000 })
})

test('two pages see each other in presence and chat; a closed page leaves; screenshot for the docs', { skip }, async (t) => {
  const h = await herald(t)
  const alice = await open(t, `${h.url}/?name=alice`)
  await waitConnected(alice, 'websocket')
  const bob = await open(t, `${h.url}/?name=bob`)
  await waitConnected(bob, 'websocket')
  const members = async (page: Page): Promise<string[]> => await page.$$eval('#members li', (lis) => lis.map((li) => li.firstChild?.textContent ?? ''))
  const waitMembers = async (page: Page, expected: string[]): Promise<void> => {
    await page.waitForFunction((want) => {
      const got = [...document.querySelectorAll('#members li')].map((li) => li.firstChild?.textContent ?? '')
      return JSON.stringify(got) === JSON.stringify(want)
    }, expected, { timeout: 5000 })
  }
  await waitMembers(alice, ['alice', 'bob'])
  await waitMembers(bob, ['alice', 'bob'])
  assert.equal(await alice.textContent('#online-count'), '2')

  await bob.fill('#chat-input', 'hi alice!')
  await bob.press('#chat-input', 'Enter')
  await alice.waitForFunction(() => document.getElementById('messages')?.textContent?.includes('hi alice!'), undefined, { timeout: 5000 })
  await alice.fill('#chat-input', 'hello bob — this came over a WebSocket')
  await alice.press('#chat-input', 'Enter')
  await bob.waitForFunction(() => document.getElementById('messages')?.textContent?.includes('hello bob'), undefined, { timeout: 5000 })
  await publishCounter(h.url, [1337])
  await alice.waitForFunction(() => document.getElementById('counter')?.textContent === '1337', undefined, { timeout: 5000 })
  // `npm run docs:screenshot` refreshes docs/demo.png from this very state; `npm test` leaves the checkout alone.
  if (process.env.HERALD_SCREENSHOT === '1') {
    mkdirSync(new URL('.', SCREENSHOT), { recursive: true })
    await alice.screenshot({ path: SCREENSHOT.pathname })
  }

  await bob.context().close()
  await waitMembers(alice, ['alice'])
  assert.deepEqual(await members(alice), ['alice'])
  await alice.waitForFunction(() => document.getElementById('messages')?.textContent?.includes('bob left'), undefined, { timeout: 5000 })
})

import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { matches } from '../../src/auth/permissions.js'
import { publish, startHerald, token, WsClient } from '../helper.js'

// Permission patterns once became regular expressions (`*` -> `.*`): `*a*a*a*a*b` against 128 `a`s took seconds,
// and every extra `*a` multiplied it, so one subscribe frame could block the node for hours.

/** The old semantics, as a regular expression: the reference the linear matcher must agree with. */
function reference (pattern: string, channel: string): boolean {
  return new RegExp('^' + pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\-]/g, '\\$&')).join('.*') + '$').test(channel)
}

test('the linear glob matcher agrees with the regular-expression semantics (seed 0x9a7e)', () => {
  const alphabet = fc.constantFrom('a', 'b', ':', '*')
  const pattern = fc.array(alphabet, { maxLength: 8 }).map((cs) => cs.join(''))
  const channel = fc.array(fc.constantFrom('a', 'b', ':'), { maxLength: 10 }).map((cs) => cs.join(''))
  fc.assert(fc.property(pattern, channel, (p, c) => matches(p, c) === reference(p, c)), { seed: 0x9a7e, numRuns: 20_000 })
})

test('a token whose patterns would backtrack for years is answered at once, and the node keeps serving', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  // 40 stars: as a backtracking regular expression against 128 `a`s this would not finish in any test's lifetime.
  const evil = '*a'.repeat(40) + '*b'
  const attacker = await WsClient.connect(wsUrl, { token: token({ sub: 'mallory', subscribe: Array.from({ length: 64 }, () => evil), publish: [evil] }) })
  const channel = 'a'.repeat(128)
  attacker.send({ type: 'subscribe', channel, id: 's' })
  const answer = await attacker.waitFor((f) => f.id === 's')
  assert.equal(answer.code, 'HERALD_ERR_FORBIDDEN')
  const victim = await WsClient.connect(wsUrl)
  await victim.subscribe('room')
  assert.equal((await publish(url, 'room', { ok: true })).status, 201)
  await victim.events('room', 1)
})

test('patterns outside the channel alphabet, or too many, make the token invalid', async (t) => {
  const { wsUrl } = await startHerald(t)
  for (const claims of [{ subscribe: ['chat:(.*)'] }, { subscribe: ['x'.repeat(257)] }, { publish: Array.from({ length: 257 }, () => 'a') }, { subscribe: [''] }]) {
    await assert.rejects(WsClient.connect(wsUrl, { token: token(claims) }), (err: { status?: number, body?: { code?: string } }) =>
      err.status === 401 && err.body?.code === 'HERALD_ERR_UNAUTHORIZED', JSON.stringify(claims).slice(0, 80))
  }
})

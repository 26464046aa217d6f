import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decodeCursor, encodeCursor } from '../src/protocol/cursor.js'
import { parseClientFrame } from '../src/protocol/parse.js'
import { isValidChannel, namespaceOf } from '../src/protocol/channel.js'
import { shouldReconnect, CloseCodes } from '../src/protocol/codes.js'

test('a cursor round-trips every channel position, read against the channels it is for; the older c1 form is still read', () => {
  const cursor = new Map([['chat:a', { offset: 5, epoch: 'e1' }], ['news', { offset: 0, epoch: 'x-Y_z' }], ['n'.repeat(128), { offset: 2 ** 40, epoch: '0' }]])
  const text = encodeCursor(cursor)
  assert.match(text, /^c2\.[A-Za-z0-9_~.-]+$/)
  assert.ok(text.length < 80, 'it names no channel: ' + text.length + ' characters for three, one of them 128 long')
  assert.deepEqual(decodeCursor(text, [...cursor.keys()]), cursor)
  assert.deepEqual(decodeCursor(text, ['news', 'other']), new Map([['news', { offset: 0, epoch: 'x-Y_z' }]]), 'only the channels asked for')
  const c1 = 'c1.' + Buffer.from(JSON.stringify([['chat:a', 5, 'e1'], ['news', 0, 'x-Y_z']])).toString('base64url')
  assert.deepEqual(decodeCursor(c1, ['chat:a', 'news']), new Map([['chat:a', { offset: 5, epoch: 'e1' }], ['news', { offset: 0, epoch: 'x-Y_z' }]]))
})

test('128 channels of 128 characters: the cursor stays a few KiB, far below any header limit', () => {
  const channels = Array.from({ length: 128 }, (_, i) => String(i).padStart(3, '0') + 'x'.repeat(125))
  const text = encodeCursor(new Map(channels.map((c, i) => [c, { offset: 1_000_000 + i, epoch: 'Ab3-_x9Z' }])))
  assert.ok(text.length < 4096, `${text.length} characters`)
  assert.equal(decodeCursor(text, channels).size, 128)
})

test('malformed cursors are refused with HERALD_ERR_BAD_CURSOR', () => {
  const bad = ['', 'nope', 'c1.!!!', 'c1.' + Buffer.from('{"a":1}').toString('base64url'),
    'c1.' + Buffer.from('[["bad name",1,"e"]]').toString('base64url'),
    'c1.' + Buffer.from('[["ok",-1,"e"]]').toString('base64url'),
    'c1.' + Buffer.from('[["ok",1.5,"e"]]').toString('base64url'),
    'c1.' + Buffer.from('[["ok",1,""]]').toString('base64url'),
    'c1.' + 'A'.repeat(20000),
    'c2.short~1~e', 'c2.AAAAAAAA~-1~e', 'c2.AAAAAAAA~1~', 'c2.AAAAAAAA~1~e~x', 'c2.AAAAAAAA~1~e é', 'c2.AAAAAAAA~zzzzzzzzzzzz~e',
    'c2.' + 'AAAAAAAA~1~e.'.repeat(2000)]
  for (const text of bad) {
    assert.throws(() => decodeCursor(text, ['ok', 'a']), (err: { code?: string }) => err.code === 'HERALD_ERR_BAD_CURSOR', text.slice(0, 40))
  }
})

test('channel names and namespaces', () => {
  for (const ok of ['a', 'chat:lobby', 'user@x.y', 'a-b_c.d:e', 'x'.repeat(128)]) assert.ok(isValidChannel(ok), ok)
  for (const bad of ['', ' ', 'a b', '{a}', 'a*', 'x'.repeat(129), 'é', 'a/b', 42, null]) assert.ok(!isValidChannel(bad), String(bad))
  assert.equal(namespaceOf('chat:lobby:1'), 'chat')
  assert.equal(namespaceOf('plain'), '')
})

test('client frames: valid ones parse, each kind of bad one gets its code and keeps its id', () => {
  const ok = parseClientFrame('{"type":"subscribe","channel":"a","since":{"offset":3,"epoch":"e"},"id":"1"}')
  assert.ok(ok.ok)
  const cases: Array<[string, string, string | undefined]> = [
    ['not json', 'HERALD_ERR_MALFORMED_JSON', undefined],
    ['[1,2]', 'HERALD_ERR_BAD_FRAME', undefined],
    ['{"type":"dance","id":"7"}', 'HERALD_ERR_UNKNOWN_FRAME', '7'],
    ['{"type":"subscribe","id":"8"}', 'HERALD_ERR_BAD_FRAME', '8'],
    ['{"type":"subscribe","channel":"a b","id":"9"}', 'HERALD_ERR_BAD_CHANNEL', '9'],
    ['{"type":"subscribe","channel":"a","since":{"offset":-1,"epoch":"e"}}', 'HERALD_ERR_BAD_FRAME', undefined],
    ['{"type":"publish","channel":"a","id":"10"}', 'HERALD_ERR_BAD_FRAME', '10'],
    ['{"type":"ping","extra":1}', 'HERALD_ERR_BAD_FRAME', undefined]
  ]
  for (const [text, code, id] of cases) {
    const parsed = parseClientFrame(text)
    assert.ok(!parsed.ok, text)
    assert.equal(parsed.error.code, code, text)
    assert.equal(parsed.id, id, text)
  }
})

test('close code ranges tell the client whether to reconnect', () => {
  assert.ok(shouldReconnect(CloseCodes.SERVICE_RESTART))
  assert.ok(shouldReconnect(CloseCodes.SLOW_CONSUMER))
  assert.ok(shouldReconnect(CloseCodes.INSUFFICIENT_STATE))
  assert.ok(!shouldReconnect(CloseCodes.UNAUTHORIZED))
  assert.ok(!shouldReconnect(CloseCodes.FORBIDDEN))
})

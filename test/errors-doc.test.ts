import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { ERROR_CODES, Errors } from '../src/errors.js'
import { CloseCodes } from '../src/protocol/codes.js'
import { TEMPORARY_CODES } from '../src/protocol/error-codes.js'

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8')
const protocol = readFileSync(new URL('../docs/protocol.md', import.meta.url), 'utf8')

test('every HERALD_ERR_* code is documented in docs/errors.md with its HTTP status', () => {
  for (const E of Object.values(Errors)) {
    const err = new E()
    const row = doc.split('\n').find((line) => line.startsWith('| `' + err.code + '`'))
    assert.ok(row !== undefined, `${err.code} is missing from docs/errors.md`)
    assert.match(row, new RegExp('\\|\\s*' + err.statusCode + '\\s*\\|'), `${err.code} row states status ${err.statusCode}`)
  }
})

test('docs/errors.md documents no code that does not exist', () => {
  const documented = [...doc.matchAll(/`(HERALD_ERR_[A-Z_]+)`/g)].map((m) => m[1])
  for (const code of documented) assert.ok(ERROR_CODES.includes(code), `${code} is documented but not defined in src/errors.ts`)
})

test('every WebSocket close code is documented in docs/protocol.md', () => {
  for (const [name, code] of Object.entries(CloseCodes)) {
    assert.ok(protocol.includes('`' + code + '`'), `close code ${name} (${code}) is missing from docs/protocol.md`)
  }
})

test('the temporary codes are the ones docs/errors.md names as temporary, and only those get Retry-After', () => {
  const paragraph = doc.split('\n\n').find((p) => p.startsWith('**Temporary**'))
  assert.ok(paragraph !== undefined, 'docs/errors.md has the **Temporary** paragraph')
  const named = [...paragraph.matchAll(/`(HERALD_ERR_[A-Z_]+)`/g)].map((m) => m[1]).sort()
  assert.deepEqual(named, [...TEMPORARY_CODES].sort())
})

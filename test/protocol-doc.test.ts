import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { ClientFrames } from '../src/protocol/client-frames.js'
import { ServerFrames } from '../src/protocol/frames.js'

// The frame tables of docs/protocol.md, held to the TypeBox schemas the server sends and parses with: a frame type
// or a field the schema has and the docs lack (or the reverse) fails here.

const doc = readFileSync(new URL('../docs/protocol.md', import.meta.url), 'utf8')

/** The rows of the table that follows `heading`: frame type -> the row's text. */
function table (heading: string): Map<string, string> {
  const at = doc.indexOf(heading)
  assert.ok(at !== -1, `docs/protocol.md has a "${heading}" section`)
  const rows = new Map<string, string>()
  for (const line of doc.slice(at).split('\n').slice(1)) {
    if (line.startsWith('#')) break
    const m = /^\| `([a-z_]+)` \|(.*)$/.exec(line)
    if (m !== null) rows.set(m[1], m[2])
  }
  return rows
}

function check (heading: string, frames: Record<string, { properties: Record<string, unknown> }>): void {
  const rows = table(heading)
  for (const [type, schema] of Object.entries(frames)) {
    const row = rows.get(type)
    assert.ok(row !== undefined, `the "${type}" frame is missing from the table under "${heading}"`)
    for (const field of Object.keys(schema.properties)) {
      if (field === 'type') continue
      assert.ok(row.includes('`' + field), `${heading}: the "${type}" row does not mention its field \`${field}\``)
    }
  }
  for (const type of rows.keys()) assert.ok(Object.hasOwn(frames, type), `${heading}: "${type}" is documented but is no frame of the schema`)
}

test('docs/protocol.md documents every client frame and its fields, and no other', () => {
  check('### Client → server', ClientFrames)
})

test('docs/protocol.md documents every server frame and its fields, and no other', () => {
  check('### Server → client', ServerFrames)
})

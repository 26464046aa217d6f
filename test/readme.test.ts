import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { EnvSchema } from '../src/config.js'

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')

test('the README documents every configuration variable with its default', () => {
  for (const [name, schema] of Object.entries(EnvSchema.properties) as Array<[string, { default?: unknown }]>) {
    const row = readme.split('\n').find((line) => line.startsWith('| `' + name + '` |'))
    assert.ok(row !== undefined, `${name} is missing from the README configuration table`)
    if (schema.default !== undefined) assert.ok(row.includes('`' + String(schema.default) + '`'), `${name}: README default differs from ${String(schema.default)}`)
  }
})

test('the README states the two set-up commands and the CI script runs the test command', () => {
  const setUp = readme.slice(readme.indexOf('## Set up'))
  const block = setUp.slice(setUp.indexOf('```sh') + 5, setUp.indexOf('```', setUp.indexOf('```sh') + 5))
  const commands = block.split('\n').map((line) => line.replace(/#.*$/, '').trim()).filter(Boolean)
  assert.deepEqual(commands, ['npm install && npm start', 'npm test'])
  // .ci/run must execute the README's test command itself, not merely mention it.
  const ci = readFileSync(new URL('../.ci/run', import.meta.url), 'utf8')
  const executed = ci.split('\n').map((line) => line.replace(/#.*$/, '').trim())
  assert.ok(executed.includes('npm test'), '.ci/run runs `npm test` on a line of its own')
  // … and the fault scenarios the README names, which npm test leaves out.
  assert.match(readme, /`npm run test:faults`/)
  assert.ok(executed.includes('npm run test:faults'), '.ci/run runs `npm run test:faults` on a line of its own')
})

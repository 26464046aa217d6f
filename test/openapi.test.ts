import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { generateOpenApi } from '../src/openapi.js'

test('openapi/openapi.json is what the routes generate (run `npm run openapi` after changing a route)', async () => {
  const committed = readFileSync(new URL('../openapi/openapi.json', import.meta.url), 'utf8')
  const generated = await generateOpenApi()
  assert.equal(committed, generated, 'openapi/openapi.json is stale: run `npm run openapi` and commit the result')
  const doc = JSON.parse(generated) as { paths: Record<string, unknown> }
  for (const path of ['/v1/channels/{channel}/events', '/v1/ws', '/v1/sse', '/v1/poll', '/healthz', '/readyz', '/metrics']) {
    assert.ok(path in doc.paths, `${path} is documented`)
  }
})

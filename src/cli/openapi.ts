import { writeFileSync } from 'node:fs'
import { generateOpenApi } from '../openapi.js'

/** `npm run openapi`: regenerates openapi/openapi.json from the route schemas. */
const target = new URL('../../openapi/openapi.json', import.meta.url)
writeFileSync(target, await generateOpenApi())
process.stdout.write(`wrote ${target.pathname}\n`)

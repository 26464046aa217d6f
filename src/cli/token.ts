import { parseArgs } from 'node:util'
import { createSigner } from 'fast-jwt'
import { devSecret } from '../dev-secret.js'

/**
 * Mints a token: `npm run token -- --sub alice --subscribe 'chat:*' --publish 'chat:*' [--ttl 3600]`.
 * Signs with JWT_SECRET, or else the development secret the server created in .herald/dev-secret.
 */
const { values } = parseArgs({
  options: {
    sub: { type: 'string' },
    subscribe: { type: 'string', multiple: true, default: [] },
    publish: { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string', default: '3600' },
    secret: { type: 'string' },
    help: { type: 'boolean', default: false }
  }
})

const usage = 'usage: npm run token -- --sub <subject> [--subscribe <pattern>]... [--publish <pattern>]... [--ttl <seconds>] [--secret <hs256 secret>]\n' +
  'Patterns: channel names where * matches any run of characters (chat:* , *). Comma lists are accepted too.\n'

if (values.help || values.sub === undefined || values.sub === '') {
  process.stderr.write(usage)
  process.exit(values.help ? 0 : 2)
}
const secret = values.secret ?? process.env.JWT_SECRET ?? devSecret(false)
if (secret === undefined) {
  process.stderr.write('No secret: set JWT_SECRET, pass --secret, or start the dev server once (npm start) so it creates .herald/dev-secret.\n')
  process.exit(2)
}
const ttl = Number(values.ttl)
if (!Number.isInteger(ttl) || ttl <= 0) {
  process.stderr.write('--ttl must be a positive number of seconds\n')
  process.exit(2)
}
const split = (list: string[]): string[] => list.flatMap((p) => p.split(',')).map((p) => p.trim()).filter(Boolean)
const sign = createSigner({ key: secret, expiresIn: ttl * 1000 })
process.stdout.write(sign({ sub: values.sub, subscribe: split(values.subscribe), publish: split(values.publish) }) + '\n')

import { existsSync } from 'node:fs'
import { after, before } from 'node:test'
import { chromium, type Browser } from 'playwright-core'

/** Debian's chromium, driven by playwright-core (no browser download). */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']

/** Why `what` is skipped (Chromium missing), or undefined; under CI=true a missing Chromium is an error, never a skip. */
export function chromiumSkipReason (what: string): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  if (process.env.CI === 'true') throw new Error(`${CHROMIUM} not found and CI=true: the browser tests must run (apt-get install chromium, or set CHROMIUM_PATH)`)
  const reason = `${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH); skipping ${what}`
  console.log(reason)
  return reason
}

/** One headless Chromium for a test file: launched before its tests (unless skipped), closed after them. */
export function sharedBrowser (skip: string | undefined): () => Browser {
  let browser: Browser | undefined
  before(async () => {
    if (skip === undefined) browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  })
  after(async () => { await browser?.close() })
  return () => {
    if (browser === undefined) throw new Error('Chromium was not launched')
    return browser
  }
}

#!/usr/bin/env node
// Thin launcher for the load tester: runs bench/loadtest.ts through tsx (no build step).
// package.json: "bin": { "herald-loadtest": "bench/bin/herald-loadtest.mjs" }
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../loadtest.ts')
process.exitCode = await main(process.argv.slice(2))

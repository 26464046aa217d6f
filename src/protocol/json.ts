/**
 * Deepest nesting of arrays and objects Herald accepts in a client frame or a REST body. JSON nested thousands
 * deep parses fine, but everything that walks it afterwards (schema checks, JSON.stringify, error messages)
 * recurses, and V8 throws a RangeError past its stack: one 10 KB frame must not be able to do that.
 */
export const MAX_JSON_DEPTH = 64

/**
 * True when JSON text nests arrays/objects deeper than `max`. A linear scan without recursion, run before
 * `JSON.parse`; text shorter than twice the bound cannot nest that deep and is not scanned.
 */
export function nestedDeeperThan (text: string, max = MAX_JSON_DEPTH): boolean {
  if (text.length <= max * 2) return false
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92) i++ // backslash: skip the escaped character
      else if (c === 34) inString = false
    } else if (c === 34) {
      inString = true
    } else if (c === 123 || c === 91) {
      if (++depth > max) return true
    } else if (c === 125 || c === 93) {
      depth--
    }
  }
  return false
}

/** A short, safe description of an untrusted value for an error message (never serialises what it is given). */
export function describe (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? value.slice(0, 64) + '…' : value)
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? 'an object' : typeof value === 'number' || typeof value === 'boolean' ? String(value) : typeof value
}

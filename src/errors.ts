import { STATUS_CODES } from 'node:http'
import createError, { type FastifyErrorConstructor } from '@fastify/error'
import type { FastifyError } from 'fastify'
import { ERROR_TABLE, TEMPORARY_CODES, type ErrorName } from './protocol/error-codes.js'

export type { ErrorCode } from './protocol/error-codes.js'

type Constructors = { [K in ErrorName]: FastifyErrorConstructor<{ code: (typeof ERROR_TABLE)[K]['code'], statusCode: (typeof ERROR_TABLE)[K]['status'] }> }

/**
 * Every error Herald answers with, as `@fastify/error` constructors built from the one table in
 * protocol/error-codes.ts (codes, statuses, messages, and which are temporary). docs/errors.md lists them all;
 * a test keeps the two in step.
 */
export const Errors = Object.fromEntries(Object.entries(ERROR_TABLE).map(([name, e]) =>
  [name, createError(e.code, e.message, e.status)])) as Constructors

/** All codes, for the docs test and the protocol reference. */
export const ERROR_CODES: string[] = Object.values(ERROR_TABLE).map((e) => e.code)

/** A Herald error is any error carrying one of our codes and an HTTP status. */
export interface HeraldError extends Error { code: string, statusCode: number }

export function isHeraldError (err: unknown): err is HeraldError {
  return err instanceof Error && typeof (err as HeraldError).code === 'string' &&
    (err as HeraldError).code.startsWith('HERALD_ERR_') && typeof (err as HeraldError).statusCode === 'number'
}

/** Whether the error may pass by itself: HTTP answers carry `Retry-After`, and the client retries. */
export function isTemporary (err: HeraldError): boolean { return TEMPORARY_CODES.has(err.code) }

/** Any thrown value as a Herald error (unknown ones become HERALD_ERR_INTERNAL). */
export function asHeraldError (err: unknown): HeraldError { return isHeraldError(err) ? err : new Errors.INTERNAL() }

/** JSON body of an HTTP error, the same shape Fastify uses for its own errors. */
export function errorBody (err: HeraldError): { statusCode: number, code: string, error: string, message: string, app?: unknown } {
  const body = { statusCode: err.statusCode, code: err.code, error: STATUS_CODES[err.statusCode] ?? 'Error', message: err.message }
  // An application's own refusal through a proxy hook (proxy/hooks.ts): its code and message go with ours.
  const app = (err as { app?: unknown }).app
  return app === undefined ? body : { ...body, app }
}

/** Maps Fastify's own errors (parsing, validation, limits) to Herald's codes. */
export function toHeraldError (err: FastifyError, maxBodyBytes: number): HeraldError {
  if (isHeraldError(err)) return err
  if (err.validation !== undefined) {
    const badChannel = err.validation.find((v) => v.keyword === 'pattern' && /channel/.test(v.instancePath + ' ' + String(v.params?.missingProperty ?? '')))
    if (badChannel !== undefined) return new Errors.BAD_CHANNEL('does not match ' + String(badChannel.params?.pattern ?? 'the channel pattern'))
    return new Errors.VALIDATION(err.message)
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new Errors.BODY_TOO_LARGE(maxBodyBytes)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new Errors.UNSUPPORTED_MEDIA_TYPE(err.message)
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new Errors.MALFORMED_JSON()
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new Errors.MALFORMED_JSON()
  }
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') return new Errors.MALFORMED_JSON()
  if (err.statusCode === 429) return new Errors.RATE_LIMITED(err.message)
  if (err.statusCode === 405) return new Errors.METHOD_NOT_ALLOWED()
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new Errors.VALIDATION(err.message)
  return new Errors.INTERNAL()
}

/** A bad setting (environment, plugin options, namespaces file): one line per problem; the server exits 78. */
export class ConfigError extends Error {
  constructor (readonly problems: string[]) {
    super('Invalid configuration:\n' + problems.map((p) => '  - ' + p).join('\n'))
    this.name = 'ConfigError'
  }
}

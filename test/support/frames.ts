import { Compile } from 'typebox/compile'
import type { TSchema } from 'typebox'
import { ServerFrames, type ServerFrameType } from '../../src/protocol/frames.js'

const checkers = Object.fromEntries(Object.entries(ServerFrames).map(([type, schema]) => [type, Compile(schema as TSchema)]))

/** A frame Herald sent that its schema does not allow. */
export class FrameViolation extends Error {}

/** Frames checked so far (the frame-schema test asserts the suite exercised every type). */
export const checkedFrameTypes = new Set<string>()

/**
 * Every frame a test client receives from Herald goes through here: a frame that does not match its schema in
 * src/protocol/frames.ts throws (an uncaught error fails the test that received it). This is how the schemas, and
 * so the docs generated from them, are held to what the server really sends.
 */
export function checkServerFrame (frame: unknown, where: string): void {
  const type = (frame as { type?: unknown } | null)?.type
  if (typeof type !== 'string' || !Object.hasOwn(checkers, type)) throw new FrameViolation(`${where}: a frame of unknown type: ${JSON.stringify(frame).slice(0, 300)}`)
  const checker = checkers[type as ServerFrameType]
  if (!checker.Check(frame)) {
    const first = checker.Errors(frame)[0]
    throw new FrameViolation(`${where}: a ${type} frame does not match its schema (${first?.instancePath ?? ''} ${first?.message ?? ''}): ${JSON.stringify(frame).slice(0, 300)}`)
  }
  checkedFrameTypes.add(type)
}

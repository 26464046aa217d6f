import type { Publication } from '../bus/broker.js'

/*
 * Per-publication byte caches owned by the WebSocket writer: built by the first socket that needs them and reused
 * by every other socket that writes the same publication (serialise once, frame once). Declared here, on the bus's
 * type, because the publication object is the one thing every subscriber of an event shares.
 */
declare module '../bus/broker.js' {
  interface Publication {
    /** `frame` as UTF-8 bytes. */
    bytes?: Buffer
    /** `frame` as one complete unmasked WebSocket text frame (header + bytes). */
    wire?: Buffer
    /** `frame` as the end of an SSE message: `data: <frame>` and the blank line (the `id:` line is each stream's). */
    sse?: Buffer
    /** The whole SSE message for streams of this one channel, whose ids all read the same here: `id:`, `data:`. */
    sseOne?: Buffer
    /** `sseOne` as one HTTP/1.1 chunk (size line, message, CRLF): such a stream's whole write when it is its turn's only event. */
    sseOneChunk?: Buffer
  }
}

/** A connection that gathers what it gets in one turn of the event loop and writes it at the turn's end. */
export interface TurnWriter { flush: () => void }

/**
 * Connections with frames waiting to be written at the end of this turn of the event loop. Everything the bus
 * hands over in one go (a publish of the embedded bus, a chunk of messages ioredis parsed) is dispatched in one
 * turn, so a connection that gets several events in it writes them in one syscall instead of one each. With one
 * event per turn (an idle server) this costs an array push; under load it is what keeps the syscall count, and so
 * the CPU per delivery, from growing with the backlog.
 */
const batch: TurnWriter[] = []
let batchScheduled = false

function writeBatch (): void {
  batchScheduled = false
  for (let i = 0; i < batch.length; i++) batch[i].flush()
  batch.length = 0
}

/** Calls `writer.flush()` at the end of this turn (once: call it when the writer's first frame of the turn waits). */
export function flushAtTurnEnd (writer: TurnWriter): void {
  batch.push(writer)
  if (!batchScheduled) { batchScheduled = true; process.nextTick(writeBatch) }
}

/** Writers held for a delay, per delay (WS_WRITE_DELAY_MS: one value per process), flushed together by one timer. */
const held = new Map<number, TurnWriter[]>()

/**
 * Calls `writer.flush()` within `ms` (once: call it when the writer's first frame waits). Every writer that starts
 * waiting in the same window is flushed by the same timer, so a socket's events are held at most `ms`, and the cost
 * is one timer per window, not one per socket.
 */
export function flushWithin (writer: TurnWriter, ms: number): void {
  let group = held.get(ms)
  if (group === undefined) {
    const writers: TurnWriter[] = group = []
    held.set(ms, writers)
    setTimeout(() => {
      held.delete(ms)
      for (let i = 0; i < writers.length; i++) writers[i].flush()
    }, ms)
  }
  group.push(writer)
}

/** The SSE `data:` part of an event message, encoded once per publication and shared by every stream. */
export function sseData (pub: Publication): Buffer {
  pub.sse ??= Buffer.from('data: ' + pub.frame + '\n\n')
  return pub.sse
}

/**
 * The SSE message of `pub` for a stream that holds this one channel only, built from such a stream's `id` (its
 * cursor: this channel at this publication's offset and epoch, the same for every such stream) and shared by all.
 */
export function sseOne (pub: Publication, id: string): Buffer {
  pub.sseOne ??= Buffer.from('id: ' + id + '\ndata: ' + pub.frame + '\n\n')
  return pub.sseOne
}

/** `sseOne` framed as one HTTP/1.1 chunk (call sseOne first). */
export function sseOneChunk (pub: Publication): Buffer {
  const message = pub.sseOne!
  if (pub.sseOneChunk === undefined) {
    const head = message.length.toString(16) + '\r\n'
    const chunk = Buffer.allocUnsafeSlow(head.length + message.length + 2)
    chunk.write(head, 0, 'latin1')
    message.copy(chunk, head.length)
    chunk[chunk.length - 2] = 13
    chunk[chunk.length - 1] = 10
    pub.sseOneChunk = chunk
  }
  return pub.sseOneChunk
}

/** The frame's bytes, encoded once per publication and shared by every socket that writes it. */
export function frameBytes (pub: Publication): Buffer {
  pub.bytes ??= Buffer.from(pub.frame)
  return pub.bytes
}

/**
 * The publication as one complete WebSocket text frame — FIN + opcode 1, unmasked (server to client), the
 * payload length, then the bytes — built once and written as is to every socket that has no extension
 * negotiated (see WsTransport.event). RFC 6455 §5.2.
 */
export function wireFrame (pub: Publication): Buffer {
  let wire = pub.wire
  if (wire === undefined) {
    const bytes = frameBytes(pub)
    const len = bytes.length
    const headerLength = len < 126 ? 2 : len < 65536 ? 4 : 10
    wire = Buffer.allocUnsafe(headerLength + len)
    wire[0] = 0x81
    if (len < 126) {
      wire[1] = len
    } else if (len < 65536) {
      wire[1] = 126
      wire.writeUInt16BE(len, 2)
    } else {
      wire[1] = 127
      wire.writeUInt32BE(Math.floor(len / 2 ** 32), 2)
      wire.writeUInt32BE(len >>> 0, 6)
    }
    bytes.copy(wire, headerLength)
    pub.wire = wire
  }
  return wire
}

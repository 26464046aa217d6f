/** One dispatched Server-Sent Events message. */
export interface SseMessage { data: string, id?: string, event?: string }

/**
 * An incremental `text/event-stream` parser (WHATWG HTML §9.2.6): feed decoded text in chunks of any size, get
 * complete messages. Lines end with CRLF, LF or CR; `:` lines are comments; a blank line dispatches.
 */
export class SseParser {
  private buffer = ''
  private data: string[] = []
  private id: string | undefined
  private event: string | undefined

  push (chunk: string): SseMessage[] {
    this.buffer += chunk
    const out: SseMessage[] = []
    let start = 0
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i)
      if (c !== 10 && c !== 13) continue
      // A CR at the very end may be the first half of a CRLF split across chunks: wait for more.
      if (c === 13 && i === this.buffer.length - 1) break
      this.line(this.buffer.slice(start, i), out)
      if (c === 13 && this.buffer.charCodeAt(i + 1) === 10) i++
      start = i + 1
    }
    this.buffer = this.buffer.slice(start)
    return out
  }

  private line (line: string, out: SseMessage[]): void {
    if (line === '') {
      if (this.data.length > 0) out.push({ data: this.data.join('\n'), id: this.id, event: this.event })
      this.data = []
      this.event = undefined
      return
    }
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') this.data.push(value)
    else if (field === 'id') this.id = value
    else if (field === 'event') this.event = value
  }
}

import { randomBytes } from 'node:crypto'
import type { Broker } from '../bus/broker.js'
import { asHeraldError } from '../errors.js'
import type { Command } from './actions.js'

/** One node's answer to a command: its result, or the error it met. */
export interface NodeReply {
  node: string
  result?: unknown
  error?: { code: string, message: string }
}

/** The answers to one command: how many nodes received it, and those that answered in time. */
export interface Replies { nodes: number, replies: NodeReply[] }

/*
 * Messages on the control channel (JSON, one object each):
 *   {"k":"req","id":"<node>-<n>","from":"<node>","cmd":{…}}       a command, to every node (the sender too)
 *   {"k":"res","id":"…","to":"<node>","node":"<node>","result"|"error":…}   one node's answer, for the sender
 * Everyone sees every answer; a node keeps those addressed to it. Anything else is ignored.
 */
interface Request { k: 'req', id: string, from: string, cmd: Command }
interface Response { k: 'res', id: string, to: string, node: string, result?: unknown, error?: { code: string, message: string } }

interface Pending { replies: NodeReply[], expected: number, done: () => void }

export interface ControlPlaneOptions {
  broker: Broker
  nodeId: string
  /** Carries out a command on this node. */
  execute: (cmd: Command) => Promise<unknown>
  /** Control messages may have been missed: state kept on the bus must be read again. */
  missed: () => void
  log: { warn: (obj: object, msg: string) => void }
  /** How long a command waits for the answers of every node that received it. */
  timeoutMs: number
}

/**
 * The server API's path between nodes: a command goes to every node over the bus's control channel
 * (Broker.publishControl; sharded pub/sub in one slot on a cluster), each carries it out on its own connections and
 * answers on the same channel, and the sender gathers the answers. The bus says how many nodes received the
 * command, so the sender knows whom to wait for; a node that does not answer within `timeoutMs` is reported as
 * missing rather than waited for. Without a control channel (a bus that has none), this node is the only one.
 */
export class ControlPlane {
  private readonly pending = new Map<string, Pending>()
  private seq = 0
  /** Where answers for this instance go: its node id made unique (two nodes configured with one id still get their own). */
  private readonly address: string

  constructor (private readonly options: ControlPlaneOptions) {
    this.address = options.nodeId + '.' + randomBytes(4).toString('hex')
  }

  async start (): Promise<void> {
    await this.options.broker.subscribeControl?.({ message: (text) => this.onMessage(text), missed: this.options.missed })
  }

  /** Sends `cmd` to every node and gathers their answers (rejects with HERALD_ERR_BUS_UNAVAILABLE if it cannot be sent). */
  async request (cmd: Command): Promise<Replies> {
    const { broker } = this.options
    if (broker.publishControl === undefined) return { nodes: 1, replies: [await this.run(cmd)] }
    const id = this.address + '-' + (++this.seq).toString(36)
    let done!: () => void
    const finished = new Promise<void>((resolve) => { done = resolve })
    const entry: Pending = { replies: [], expected: Number.POSITIVE_INFINITY, done }
    // Registered before sending: an answer may arrive before the publish returns.
    this.pending.set(id, entry)
    const timer = setTimeout(done, this.options.timeoutMs)
    try {
      const message: Request = { k: 'req', id, from: this.address, cmd }
      entry.expected = await broker.publishControl(JSON.stringify(message))
      if (entry.replies.length >= entry.expected) done()
      await finished
      return { nodes: Math.max(entry.expected, entry.replies.length), replies: entry.replies }
    } finally {
      clearTimeout(timer)
      this.pending.delete(id)
    }
  }

  close (): void {
    for (const entry of this.pending.values()) entry.done()
  }

  private async run (cmd: Command): Promise<NodeReply> {
    try {
      return { node: this.options.nodeId, result: await this.options.execute(cmd) }
    } catch (err) {
      const herr = asHeraldError(err)
      return { node: this.options.nodeId, error: { code: herr.code, message: herr.message } }
    }
  }

  private onMessage (text: string): void {
    let msg: Request | Response
    try {
      msg = JSON.parse(text) as Request | Response
    } catch {
      return
    }
    if (msg === null || typeof msg !== 'object' || typeof msg.id !== 'string') return
    if (msg.k === 'req' && typeof msg.from === 'string' && msg.cmd !== null && typeof msg.cmd === 'object') {
      void this.answer(msg)
    } else if (msg.k === 'res' && msg.to === this.address) {
      const entry = this.pending.get(msg.id)
      if (entry === undefined) return
      entry.replies.push({ node: String(msg.node), result: msg.result, error: msg.error })
      if (entry.replies.length >= entry.expected) entry.done()
    }
  }

  private async answer (req: Request): Promise<void> {
    const reply = await this.run(req.cmd)
    const response: Response = { k: 'res', id: req.id, to: req.from, node: reply.node, result: reply.result, error: reply.error }
    try {
      await this.options.broker.publishControl!(JSON.stringify(response))
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message, command: req.cmd.op }, 'control: could not answer a command')
    }
  }
}

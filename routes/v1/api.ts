import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ErrorBody } from '../../src/schemas.js'
import { Errors, asHeraldError, isTemporary } from '../../src/errors.js'
import { CloseCodes } from '../../src/protocol/codes.js'
import type { Principal } from '../../src/auth/permissions.js'
import type { Command, ConnectionError, ConnectionInfo, NodeInfo } from '../../src/control/actions.js'
import type { Replies } from '../../src/control/plane.js'
import type { NodeEvent } from '../../src/control/events.js'
import type { Revocation } from '../../src/control/revocations.js'
import { HistoryReply, PresenceReply, historyJson, historyLimit, sendJsonText } from '../../src/schemas.js'
import {
  ApiHistoryQuery, ApiPresenceQuery, ConnectionsQuery, EventsQuery, EventsReply, ConnectionsReply, BroadcastBody, BroadcastReply, ChannelsQuery, ChannelsReply, ClosedReply, DisconnectBody, MAX_REASON_BYTES, NodesReply,
  RevokeBody, RevokeReply, SubscribeBody, SubscribeReply, UnsubscribeBody, UnsubscribeReply, refuseUnknownFields
} from '../../src/control/schemas.js'

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 413: ErrorBody, 429: ErrorBody, 503: ErrorBody }
const common = { tags: ['server api'], security: [{ apiKey: [] }] }
const config = { admission: 'api' as const, rateLimit: false }

/** Live streams (`GET /v1/api/live`) one node serves at once; one more is refused with 429. */
export const LIVE_STREAMS_MAX = 16
/** How often a live stream sends its message. */
export const LIVE_INTERVAL_MS = 1000
/** New events one live message carries at most. */
const LIVE_EVENTS_MAX = 50
/** A live stream whose reader has this many bytes unread is ended (it is not reading). */
const LIVE_BUFFER_MAX = 1 << 20

/** Who publishes a broadcast: the backend, allowed every channel (namespaces still apply). */
const API: Principal = { sub: 'server-api', subscribe: [], publish: ['*'] }
/** Reads on behalf of an API key (presence): every channel, still subject to its namespace's settings. */
const API_READER: Principal = { sub: 'server-api', subscribe: ['*'], publish: [] }

/** Longest a revocation may be asked to last. */
const MAX_REVOKE_SECONDS = 366 * 86400

type NodeError = { node: string, client?: string, code: string, message: string }

/** The answers of every node summed into one reply: counts added up, errors gathered (a node's own failure too). */
function gather<const K extends string> (sent: Replies, counts: readonly K[]): { expected: number, answered: number, errors?: NodeError[] } & Record<K, number> {
  const totals: Record<string, number> = {}
  for (const k of counts) totals[k] = 0
  const errs: NodeError[] = []
  for (const reply of sent.replies) {
    if (reply.error !== undefined) { errs.push({ node: reply.node, ...reply.error }); continue }
    const result = reply.result as Record<string, unknown> | undefined
    for (const k of counts) totals[k] += Number(result?.[k] ?? 0)
    for (const e of (result?.errors as ConnectionError[] | undefined) ?? []) errs.push({ node: reply.node, ...e })
  }
  return { expected: sent.nodes, answered: sent.replies.length, ...(totals as Record<K, number>), ...(errs.length > 0 ? { errors: errs } : {}) }
}

/** The events of every node's answer, newest first (by time, then by each node's sequence), at most `limit`. */
export function mergeEvents (sent: Replies, limit: number): Array<NodeEvent & { node: string }> {
  const all = sent.replies.flatMap((r) => ((r.result as { events?: NodeEvent[] } | undefined)?.events ?? []).map((e) => ({ node: r.node, ...e })))
  return all.sort((a, b) => b.ts - a.ts || b.seq - a.seq).slice(0, limit)
}

const apiRoutes: FastifyPluginAsync = async (plain) => {
  const fastify = plain.withTypeProvider<TypeBoxTypeProvider>()
  const { heraldPresence: presence, heraldConfig: settings, heraldBus: bus, heraldPublisher: publisher, heraldNamespaces: namespaces, heraldControl: control, heraldRevocations: revocations } = fastify
  const send = async (cmd: Command): Promise<Replies> => await control.plane.request(cmd)
  const sessions = fastify.heraldSessions

  async function nodesReply (): Promise<ReturnType<typeof gather<never>> & { nodes: NodeInfo[] }> {
    const sent = await send({ op: 'node' })
    const nodes = sent.replies.flatMap((r) => r.result === undefined ? [] : [r.result as NodeInfo]).sort((a, b) => a.node < b.node ? -1 : a.node > b.node ? 1 : 0)
    return { ...gather(sent, []), nodes }
  }

  /** The open live streams, each by the function that ends it (with a reason sent as `end` first, when given). */
  const live = new Set<(reason?: string) => void>()
  sessions.onDrain(() => { for (const end of [...live]) end('draining') })
  fastify.addHook('preClose', async () => { for (const end of [...live]) end('closing') })

  fastify.post('/api/broadcast', {
    config,
    bodyLimit: settings.maxBodyBytes,
    preValidation: refuseUnknownFields(BroadcastBody),
    schema: {
      ...common,
      summary: 'Publish one event to many channels',
      description: 'Each channel gets the event with its own offset, or an error of its own. `id` makes a retry within IDEMPOTENCY_TTL return the first offsets (per channel). Answers 503 only when every channel failed for a reason that may pass.',
      body: BroadcastBody,
      response: { 200: BroadcastReply, ...errors }
    }
  }, async (request) => {
    const { channels, data, event, id } = request.body
    const results = await Promise.all(channels.map(async (channel) => {
      try {
        return await publisher.publish(API, { channel, data, event, id }, 'api')
      } catch (err) {
        return { channel, failure: asHeraldError(err) }
      }
    }))
    const failures = results.flatMap((r) => 'failure' in r ? [r.failure] : [])
    if (failures.length === results.length && failures.every(isTemporary)) throw failures[0]
    return { results: results.map((r) => 'failure' in r ? { channel: r.channel, error: { code: r.failure.code, message: r.failure.message } } : r) }
  })

  fastify.post('/api/disconnect', {
    config,
    preValidation: refuseUnknownFields(DisconnectBody),
    schema: {
      ...common,
      summary: 'Close the connections of a subject',
      description: 'Every connection of `sub` (or only `client`) on every node and transport is closed with `code` (default 4504: do not reconnect with this token). WebSocket: that close code; SSE: a `disconnect` message; a waiting long-poll: an answer with `disconnect`.',
      body: DisconnectBody,
      response: { 200: ClosedReply, ...errors }
    }
  }, async (request) => {
    const { sub, client, code = CloseCodes.DISCONNECTED, reason = 'disconnected by the server' } = request.body
    if (Buffer.byteLength(reason) > MAX_REASON_BYTES) throw new Errors.VALIDATION(`reason must be at most ${MAX_REASON_BYTES} bytes of UTF-8`)
    return gather(await send({ op: 'disconnect', sub, client, code, reason }), ['closed'])
  })

  fastify.post('/api/subscribe', {
    config,
    preValidation: refuseUnknownFields(SubscribeBody),
    schema: {
      ...common,
      summary: 'Subscribe the live connections of a subject to a channel',
      description: 'Every live connection of `sub` (or only `client`) on every node gets `subscribed` (with `server: true`), then the channel\'s events — replayed from `since` first when given. No token pattern is needed; the namespace and MAX_SUBSCRIPTIONS still apply (per connection: `errors`). For this connection only: a reconnect does not bring it back.',
      body: SubscribeBody,
      response: { 200: SubscribeReply, ...errors, 404: ErrorBody }
    }
  }, async (request) => {
    const { sub, channel, since, client } = request.body
    namespaces.require(channel)
    return gather(await send({ op: 'subscribe', sub, channel, since, client }), ['connections', 'subscribed', 'already'])
  })

  fastify.post('/api/unsubscribe', {
    config,
    preValidation: refuseUnknownFields(UnsubscribeBody),
    schema: {
      ...common,
      summary: 'End a channel\'s subscription on the live connections of a subject',
      description: 'Every live connection of `sub` (or only `client`) subscribed to `channel` gets `unsubscribed` with `reason: "server"`. It takes no permission away: a client whose token allows the channel may subscribe again (revoke the token to keep it out).',
      body: UnsubscribeBody,
      response: { 200: UnsubscribeReply, ...errors }
    }
  }, async (request) => {
    const { sub, channel, client } = request.body
    return gather(await send({ op: 'unsubscribe', sub, channel, client }), ['connections', 'unsubscribed'])
  })

  fastify.post('/api/revoke', {
    config,
    preValidation: refuseUnknownFields(RevokeBody),
    schema: {
      ...common,
      summary: 'Revoke the tokens of a subject, or one token',
      description: '`sub`: every token of the subject issued before now (`iat` up to this second, or none) is refused; `jti`: the token with that id. On every route and node, nodes started later included, until `until` (default now + REVOKE_TTL). Live connections using them are closed with 4505. Kept on the bus (Redis, with a TTL), at most REVOKE_MAX at once.',
      body: RevokeBody,
      response: { 200: RevokeReply, ...errors }
    }
  }, async (request) => {
    const { sub, jti, until: asked } = request.body
    if ((sub === undefined) === (jti === undefined)) throw new Errors.VALIDATION('give exactly one of "sub" and "jti"')
    const now = Date.now() / 1000
    if (asked !== undefined && (asked <= now || asked > now + MAX_REVOKE_SECONDS)) throw new Errors.VALIDATION('"until" must be in the future, at most 366 days ahead (seconds since 1970)')
    const until = asked ?? Math.ceil(now) + settings.api.revokeTtlSeconds
    // A token's iat has whole seconds: one from this second may predate the call, so it is refused too.
    const asRevocation: Revocation = sub !== undefined ? { kind: 'sub', sub, before: Math.ceil(now), until } : { kind: 'jti', jti: jti!, until }
    const kept = await revocations.add(asRevocation)
    const revoked = kept.kind === 'sub' ? { sub: kept.sub, before: kept.before, until: kept.until } : { jti: kept.jti, until: kept.until }
    return { ...gather(await send({ op: 'revoke', revocation: kept }), ['closed']), revoked }
  })

  fastify.get('/api/channels', {
    config,
    schema: {
      ...common,
      summary: 'Live channels across every node',
      description: 'Channels with at least one subscriber on some node, with their subscriptions summed over the nodes that answered.',
      querystring: ChannelsQuery,
      response: { 200: ChannelsReply, ...errors }
    }
  }, async (request) => {
    const { pattern, limit = 1000 } = request.query
    const sent = await send({ op: 'channels', pattern, limit })
    const counts = new Map<string, number>()
    let truncated = false
    for (const reply of sent.replies) {
      const result = reply.result as { channels?: Array<[string, number]>, truncated?: boolean } | undefined
      for (const [name, n] of result?.channels ?? []) counts.set(name, (counts.get(name) ?? 0) + n)
      truncated ||= result?.truncated === true
    }
    const channels = [...counts].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0).map(([channel, subscribers]) => ({ channel, subscribers }))
    return { ...gather(sent, []), channels, truncated }
  })

  fastify.get('/api/nodes', {
    config,
    schema: {
      ...common,
      summary: 'Every node: id, version, uptime, connections, subscriptions, deliveries per second',
      response: { 200: NodesReply, ...errors }
    }
  }, async () => await nodesReply())

  fastify.get('/api/live', {
    config,
    schema: {
      ...common,
      summary: 'The nodes and new events, pushed once a second (Server-Sent Events)',
      description: `An SSE stream (\`text/event-stream\`; read it with fetch, since EventSource cannot send X-API-Key): once a second an \`update\` message whose data is the answer of \`GET /v1/api/nodes\` plus \`events\`: the events of \`GET /v1/api/events\` not sent before on this stream (newest first, at most ${LIVE_EVENTS_MAX}). On drain or shutdown an \`end\` message with \`reason\`, then the stream ends. At most ${LIVE_STREAMS_MAX} streams per node (429 HERALD_ERR_TOO_MANY_LIVE_STREAMS).`,
      produces: ['text/event-stream'],
      response: { 200: Type.String({ description: 'text/event-stream: `event: update` messages, a last `event: end`' }), ...errors }
    }
  }, async (request, reply) => {
    if (sessions.draining) throw new Errors.DRAINING()
    if (live.size >= LIVE_STREAMS_MAX) throw new Errors.TOO_MANY_LIVE_STREAMS(`${LIVE_STREAMS_MAX} on this node`)
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no', 'x-content-type-options': 'nosniff' })
    res.flushHeaders()
    const seen = new Map<string, number>()
    let ended = false
    let timer: NodeJS.Timeout | undefined
    const end = (reason?: string): void => {
      if (ended) return
      ended = true
      clearTimeout(timer)
      live.delete(end)
      if (reason !== undefined && !res.destroyed) res.write('event: end\ndata: ' + JSON.stringify({ reason }) + '\n\n')
      res.end()
    }
    live.add(end)
    res.on('close', () => { end() })
    const tick = async (): Promise<void> => {
      let message: string
      try {
        const [nodes, sent] = await Promise.all([nodesReply(), send({ op: 'events', limit: LIVE_EVENTS_MAX })])
        const events = mergeEvents(sent, LIVE_EVENTS_MAX).filter((e) => e.seq > (seen.get(e.node) ?? 0))
        for (const e of events) seen.set(e.node, Math.max(seen.get(e.node) ?? 0, e.seq))
        message = 'event: update\ndata: ' + JSON.stringify({ ...nodes, events }) + '\n\n'
      } catch (err) {
        const herr = asHeraldError(err)
        message = 'event: error\ndata: ' + JSON.stringify({ code: herr.code, message: herr.message }) + '\n\n'
      }
      if (ended) return
      res.write(message)
      if (res.writableLength > LIVE_BUFFER_MAX) { end(); return }
      timer = setTimeout(() => { void tick() }, LIVE_INTERVAL_MS)
    }
    void tick()
  })

  fastify.get('/api/connections', {
    config,
    schema: {
      ...common,
      summary: 'The connections of a subject across every node',
      description: 'WebSockets, SSE streams and long-poll sessions of `sub` on every node that answered: node, id, transport, when opened, subscriptions, bytes queued. Read-only; close them with `disconnect`.',
      querystring: ConnectionsQuery,
      response: { 200: ConnectionsReply, ...errors }
    }
  }, async (request) => {
    const sent = await send({ op: 'connections', sub: request.query.sub })
    const connections = sent.replies.flatMap((r) => ((r.result as { connections?: ConnectionInfo[] } | undefined)?.connections ?? []).map((c) => ({ node: r.node, ...c })))
      .sort((a, b) => a.since - b.since)
    return { ...gather(sent, []), connections }
  })

  fastify.get('/api/events', {
    config,
    schema: {
      ...common,
      summary: 'Recent notable events of every node, newest first',
      description: 'The events tail: connections closed by the server with code and reason (API disconnects, revocations, slow-consumer evictions, token expiry, drain), heartbeat timeouts, 429 refusals and bus reconnects. Each node keeps its last 200 in memory (lost on restart); no token or payload is kept.',
      querystring: EventsQuery,
      response: { 200: EventsReply, ...errors }
    }
  }, async (request) => {
    const limit = request.query.limit ?? 100
    const sent = await send({ op: 'events', limit })
    return { ...gather(sent, []), events: mergeEvents(sent, limit) }
  })

  fastify.get('/api/presence', {
    config,
    schema: {
      ...common,
      summary: 'Who is subscribed to a channel',
      description: 'As `GET /v1/channels/{channel}/presence`, with an API key instead of a token: members (one per token `sub`, with their connections), cluster-wide. Needs `presence` in the channel\'s namespace (404 `HERALD_ERR_PRESENCE_DISABLED` otherwise; a counts-only namespace answers 400 `HERALD_ERR_PRESENCE_COUNTS_ONLY`).',
      querystring: ApiPresenceQuery,
      response: { 200: PresenceReply, ...errors, 404: ErrorBody }
    }
  }, async (request) => {
    const { channel } = request.query
    return { channel, ...await presence.query.members(API_READER, channel) }
  })

  fastify.get('/api/history', {
    config,
    schema: {
      ...common,
      summary: 'Read a channel\'s history',
      description: 'As `GET /v1/channels/{channel}/events`, with an API key instead of a token: events after `since`, oldest first, with the channel\'s epoch, newest offset and oldest offset still kept.',
      querystring: ApiHistoryQuery,
      response: { 200: HistoryReply, ...errors, 404: ErrorBody }
    }
  }, async (request, reply) => {
    const { channel, since } = request.query
    const limit = historyLimit(request.query.limit, settings.history.limitMax)
    const ns = namespaces.require(channel)
    sendJsonText(reply, historyJson(channel, since, await bus.history(channel, { since, limit, historyTtlSeconds: ns.historyTtl })))
  })
}

export default apiRoutes

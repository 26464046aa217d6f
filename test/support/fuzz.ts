import type { TestApp } from '../helper.js'
import { until } from '../helper.js'

/** Why a node is not back to zero after a fuzz run (connections, subscriptions, channels, presence), or undefined. */
export async function leftovers (app: TestApp['app'], presenceChannels: readonly string[]): Promise<string | undefined> {
  const h = app.herald
  const presence: string[] = []
  for (const channel of presenceChannels) {
    const count = await h.presence?.store.count(channel)
    if (count !== undefined && (count.members !== 0 || count.connections !== 0)) presence.push(`${channel}: ${JSON.stringify(count)}`)
  }
  const state = { connections: h.connections.count(), subscriptions: h.hub.subscriptionCount, channels: h.hub.channelCount }
  if (state.connections === 0 && state.subscriptions === 0 && state.channels === 0 && presence.length === 0) return undefined
  return JSON.stringify(state) + (presence.length > 0 ? ' presence ' + presence.join(', ') : '')
}

/** Whether `check` comes true within `ms` (without failing the test: the caller says what it means). */
export async function settled (check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  try {
    await until(check, 'settled', ms)
    return true
  } catch {
    return false
  }
}

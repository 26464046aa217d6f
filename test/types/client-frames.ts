import type { Static } from 'typebox'
import type { EventFrame, SubscribedFrame, ServerFrame, PollAnswer } from '../../client/frames.js'
import type { ServerFrames } from '../../src/protocol/frames.js'

// Compile-time contract, checked by `tsc` in `npm test` (not a node:test case, which could not fail at run time):
// every frame the server's schemas describe is assignable to the client's type for it.
type Accepts<Client, Server extends Client> = Server
export type Checks = [
  Accepts<EventFrame, Static<typeof ServerFrames.event>>,
  Accepts<SubscribedFrame, Static<typeof ServerFrames.subscribed>>,
  Accepts<ServerFrame, Static<(typeof ServerFrames)[keyof typeof ServerFrames]>>,
  Accepts<PollAnswer['events'][number], Static<typeof ServerFrames.event>>
]

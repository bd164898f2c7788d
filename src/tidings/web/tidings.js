// tidings.js — the browser client of Tidings, a dependency-free ES module.
//
//   import { connect } from "/static/tidings.js";
//   const client = await connect(location.origin, { token });
//   const session = await client.join(sessionId);
//   session.subscribe(() => render(session.getSnapshot()));
//   await session.sendMessage("Hello!").confirmed;
//
// Same rules as the Python SDK (docs/client-js.md): replicas applied in seq order,
// optimistic sends reconciled on ack or event, reconnect with backoff and full jitter,
// resume with `after`, unacknowledged sends re-sent with their client ids, an offline queue
// kept in sessionStorage, heartbeat detection, token refresh, an HTTP fallback.

export { Client, TidingsError, VERSION, connect, tokenClaims, urlsOf } from "./lib/client.js";
export { Replica, cpLength, messageSeq } from "./lib/replica.js";
export { SendFailed, SendHandle, Session, newClientId } from "./lib/session.js";
export { STATES, TRANSITIONS, backoffDelay, next } from "./lib/machine.js";
export { OrderingBuffer } from "./lib/ordering.js";

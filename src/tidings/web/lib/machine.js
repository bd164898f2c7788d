// The browser client's connection state, every transition in one table (pure, no I/O).
//
// States: connecting (first attempt), connected (a WebSocket is open and `connected` came),
// reconnecting (the link failed; waiting or trying again), fallback (the WebSocket kept
// failing: sends go over POST, events come over SSE, and the WebSocket is still retried),
// offline (the browser says there is no network), closed (by `close()` or a fatal error).

export const STATES = Object.freeze(["connecting", "connected", "reconnecting", "fallback", "offline", "closed"]);

/** input → {from state: to state}; a pair missing from the table leaves the state as it is. */
export const TRANSITIONS = Object.freeze({
  opened: { connecting: "connected", reconnecting: "connected", fallback: "connected", offline: "connected" },
  lost: { connecting: "reconnecting", connected: "reconnecting" },
  fallback: { connecting: "fallback", reconnecting: "fallback", connected: "fallback" },
  offline: { connecting: "offline", connected: "offline", reconnecting: "offline", fallback: "offline" },
  online: { offline: "reconnecting" },
  fatal: { connecting: "closed", connected: "closed", reconnecting: "closed", fallback: "closed", offline: "closed" },
  close: { connecting: "closed", connected: "closed", reconnecting: "closed", fallback: "closed", offline: "closed" },
});

/**
 * The state after `input` in `state`.
 * @param {string} state @param {keyof typeof TRANSITIONS} input @returns {string}
 */
export function next(state, input) {
  const row = TRANSITIONS[input];
  if (row === undefined) throw new Error(`unknown input ${input}`);
  return /** @type {Record<string, string>} */ (row)[state] ?? state;
}

/** Close codes after which retrying cannot help: the client stops and reports. */
export const FATAL_CLOSE_CODES = Object.freeze(new Set([4001, 4003]));

/** Send errors worth retrying as they are (after `retry_after_ms`). */
export const RETRYABLE_CODES = Object.freeze(new Set(["rate_limited", "unavailable"]));

/**
 * Reconnect delay before retry number `attempt` (0 for the first): exponential backoff
 * with full jitter, uniform in [0, min(cap, base * 2**attempt)].
 * @param {number} attempt @param {{baseMs?: number, capMs?: number, random?: () => number}} [options]
 */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return random() * ceiling;
}

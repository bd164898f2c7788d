// A joined session: its replica, its store interface (subscribe / getSnapshot) and the
// sends made in it. The browser twin of tidings/client/session.py.
//
// Every input from the network goes through `afterInput`, which turns what the replica
// recorded into settled send handles, fetches (gaps, stream refetches) and one debounced
// change notification. Snapshots are immutable objects rebuilt only when something changed,
// so `getSnapshot()` is stable between changes, as React's useSyncExternalStore requires.

import { Replica } from "./replica.js";

/** @typedef {import("./replica.js").ChatMessage} ChatMessage */

export class SendFailed extends Error {
  /** @param {string} code @param {string} message @param {number | null} [version] */
  constructor(code, message, version = null) {
    super(message);
    this.name = "SendFailed";
    this.code = code;
    this.version = version;
  }
}

/** A fresh client id: unique per logical action. */
export function newClientId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  return `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}-${Math.random().toString(16).slice(2)}`;
}

/** What `sendMessage` (and the other sends) return at once. */
export class SendHandle {
  /** @param {string} clientId @param {string} kind */
  constructor(clientId, kind) {
    this.clientId = clientId;
    this.key = clientId;
    this.kind = kind;
    /** @type {"pending" | "confirmed" | "failed"} */
    this.status = "pending";
    /** @type {number | null} */
    this.seq = null;
    /** @type {string | null} */
    this.eventId = null;
    /** @type {SendFailed | null} */
    this.error = null;
    /** @type {(value: SendHandle) => void} */
    let resolve = () => {};
    /** @type {(error: Error) => void} */
    let reject = () => {};
    /** Settles on the ack: resolves with this handle, rejects with SendFailed. @type {Promise<SendHandle>} */
    this.confirmed = new Promise((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    // A handle nobody awaits must not raise an unhandled rejection.
    this.confirmed.catch(() => {});
    this._resolve = resolve;
    this._reject = reject;
  }

  /** @param {import("./replica.js").Resolved} resolved */
  settle(resolved) {
    if (this.status !== "pending") return;
    if (resolved.ok) {
      this.status = "confirmed";
      this.seq = resolved.seq;
      this.eventId = resolved.eventId;
      this._resolve(this);
    } else {
      this.status = "failed";
      this.error = new SendFailed(resolved.code ?? "failed", resolved.error ?? "the send failed");
      this._reject(this.error);
    }
  }
}

/** @param {ChatMessage} m */
function messageView(m) {
  return Object.freeze({
    key: m.key,
    id: m.id,
    seq: m.seq,
    author: m.author,
    role: m.role,
    content: m.content,
    isCode: m.isCode,
    status: m.status,
    clientId: m.clientId,
    createdAt: m.createdAt,
    error: m.error,
    usage: m.usage,
  });
}

/**
 * The link a session uses to talk to the server (implemented by the Client): the narrow
 * interface a session needs, never the whole client.
 * @typedef {object} SessionHost
 * @property {(session: Session, clientId: string) => void} transmit
 * @property {(session: Session, name: string, data: object) => void} signal
 * @property {(session: Session, messageId: string) => Promise<void>} cancel
 * @property {(session: Session, after: number, last: number) => void} fetchEvents
 * @property {(session: Session, messageId: string) => void} fetchMessage
 * @property {(session: Session) => void} leave
 * @property {(session: Session) => void} persist
 * @property {() => void} checkQueue
 * @property {number} debounceMs
 */

export class Session {
  /** @param {SessionHost} host @param {string} id @param {string | null} user */
  constructor(host, id, user) {
    this.host = host;
    this.id = id;
    this.replica = new Replica(id, { user });
    /** @type {Map<string, SendHandle>} */
    this.handles = new Map();
    /** Sends in flight or queued: client id → {kind, data}, in order. @type {Map<string, {kind: string, data: object}>} */
    this.outbox = new Map();
    /** @type {Set<(changes: Array<[string, string | null]>) => void>} */
    this.listeners = new Set();
    /** @type {Set<(signal: {name: string, from: string, data: any}) => void>} */
    this.signalListeners = new Set();
    /** @type {Map<string, [string, string | null]>} */
    this.changes = new Map();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    this.left = false;
    /** @type {string | null} why the server ended this subscription */
    this.ended = null;
    this.snapshotCache = this.buildSnapshot();
    /** @type {Array<() => void>} */
    this.readyWaiters = [];
    /** Set by a pending `join`: called when the subscribe is refused. @type {((error: Error) => void) | null} */
    this.joinFailed = null;
  }

  /** The session's state now (an immutable snapshot). */
  get state() {
    return this.snapshotCache;
  }

  getSnapshot = () => this.snapshotCache;

  /**
   * Call `listener(changes)` after changes, at most once per debounce period; `changes`
   * lists every (field, key) touched since the previous call: distinct messages are never
   * merged away. Returns the function that unsubscribes.
   * @param {(changes: Array<[string, string | null]>) => void} listener
   */
  subscribe = (listener) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** @param {(signal: {name: string, from: string, data: any}) => void} listener */
  onSignal(listener) {
    this.signalListeners.add(listener);
    return () => this.signalListeners.delete(listener);
  }

  buildSnapshot() {
    const r = this.replica;
    const s = r.state;
    return Object.freeze({
      session: this.id,
      loaded: r.loaded,
      seq: s.seq,
      title: s.title,
      status: s.status,
      version: s.version,
      metadata: s.metadata,
      members: Object.freeze({ ...s.members }),
      presence: Object.freeze([...s.presence]),
      cards: Object.freeze([...s.cards.values()]),
      agent: s.agent,
      stats: Object.freeze({ ...s.stats, tokens: { ...s.stats.tokens } }),
      messages: Object.freeze(r.messages.map(messageView)),
      ended: this.ended,
    });
  }

  // ------------------------------------------------------------ sends

  /**
   * Send a chat message: it shows at once, `pending`; the handle's `confirmed` promise
   * settles on the ack.
   * @param {string} content @param {{isCode?: boolean, clientId?: string}} [options]
   */
  sendMessage(content, { isCode = false, clientId } = {}) {
    return this.send("message", { content, is_code: isCode }, clientId);
  }

  /** @param {string} title @param {string} content @param {{source?: string}} [options] */
  addCard(title, content, { source = "" } = {}) {
    return this.send("card.add", { title, content, source });
  }

  /** @param {string} cardId */
  removeCard(cardId) {
    return this.send("card.remove", { card_id: cardId });
  }

  /** @param {Record<string, unknown>} changes @param {{baseVersion?: number}} [options] */
  update(changes, { baseVersion } = {}) {
    /** @type {Record<string, unknown>} */
    const data = { changes };
    if (baseVersion !== undefined) data.base_version = baseVersion;
    return this.send("session.update", data);
  }

  /** @param {string} kind @param {Record<string, any>} data @param {string} [clientId] */
  send(kind, data, clientId = newClientId()) {
    this.host.checkQueue();
    const handle = new SendHandle(clientId, kind);
    this.handles.set(clientId, handle);
    this.outbox.set(clientId, { kind, data });
    this.replica.addSend(clientId, kind, data);
    this.host.persist(this);
    this.afterInput();
    this.host.transmit(this, clientId);
    return handle;
  }

  /** Send a failed message again, as a new send (a new client id). @param {string} key */
  retry(key) {
    const message = this.replica.messageByKey(key);
    if (!message || message.status !== "failed" || message.id !== null) return null;
    this.replica.dropPending(key);
    return this.sendMessage(message.content, { isCode: message.isCode });
  }

  /** Restore a send queued before a reload (same client id: exactly once). @param {string} clientId @param {string} kind @param {Record<string, any>} data */
  restore(clientId, kind, data) {
    if (this.outbox.has(clientId)) return;
    const handle = new SendHandle(clientId, kind);
    this.handles.set(clientId, handle);
    this.outbox.set(clientId, { kind, data });
    this.replica.addSend(clientId, kind, data);
    this.afterInput();
  }

  /** An ephemeral signal to the other subscribers (typing, …). @param {string} name @param {object} [data] */
  signal(name, data = {}) {
    this.host.signal(this, name, data);
  }

  /** @param {boolean} typing */
  typing(typing) {
    this.signal("typing", { typing });
  }

  /** Stop an assistant reply in progress. @param {string} messageId */
  cancel(messageId) {
    return this.host.cancel(this, messageId);
  }

  leave() {
    if (this.left) return;
    this.left = true;
    this.host.leave(this);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
    this.signalListeners.clear();
  }

  // ------------------------------------------------------------ inputs (from the client)

  /** @param {number} seq @param {object | null} snapshot */
  subscribed(seq, snapshot) {
    if (snapshot) this.replica.loadSnapshot(seq, /** @type {any} */ (snapshot));
    this.afterInput();
  }

  /** @param {object} event */
  event(event) {
    this.replica.receiveEvent(/** @type {any} */ (event));
    this.afterInput();
  }

  /** @param {string} messageId @param {number} offset @param {string} text */
  stream(messageId, offset, text) {
    this.replica.receiveStream(messageId, offset, text);
    this.afterInput();
  }

  /** @param {object} message */
  message(message) {
    this.replica.receiveMessage(/** @type {any} */ (message));
    this.afterInput();
  }

  /** @param {string[]} online */
  presence(online) {
    this.replica.state.presence = [...online];
    this.replica.touch("presence");
    this.afterInput();
  }

  /** @param {{name: string, from: string, data: any}} signal */
  signalled(signal) {
    for (const listener of [...this.signalListeners]) {
      try {
        listener(signal);
      } catch (error) {
        console.error("tidings: a signal listener failed", error);
      }
    }
  }

  /** @param {string} clientId @param {number} seq @param {string} eventId */
  ack(clientId, seq, eventId) {
    this.outbox.delete(clientId);
    this.host.persist(this);
    this.replica.receiveAck(clientId, seq, eventId);
    this.afterInput();
  }

  /** @param {string} clientId @param {string} code @param {string} message */
  refused(clientId, code, message) {
    this.outbox.delete(clientId);
    this.host.persist(this);
    this.replica.sendFailed(clientId, message, code);
    this.afterInput();
  }

  /** @param {string} why */
  end(why) {
    this.ended = why;
    this.replica.touch("ended");
    this.afterInput();
  }

  /** @returns {Promise<void>} resolves once the replica holds the session's state */
  ready() {
    if (this.replica.loaded) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  afterInput() {
    const r = this.replica;
    for (const resolved of r.takeResolved()) {
      const handle = this.handles.get(resolved.clientId);
      this.handles.delete(resolved.clientId);
      this.outbox.delete(resolved.clientId);
      handle?.settle(resolved);
    }
    const gap = r.gap;
    if (gap !== null) this.host.fetchEvents(this, gap[0] - 1, gap[1]);
    for (const id of r.takeRefetches()) this.host.fetchMessage(this, id);
    const touched = r.takeTouched();
    if (r.loaded && this.readyWaiters.length) {
      for (const resolve of this.readyWaiters.splice(0)) resolve();
    }
    if (!touched.length) return;
    for (const [what, key] of touched) this.changes.set(`${what}\u0000${key ?? ""}`, [what, key]);
    this.snapshotCache = this.buildSnapshot();
    if (this.timer === null && !this.left) {
      this.timer = setTimeout(() => this.notify(), this.host.debounceMs);
    }
  }

  notify() {
    this.timer = null;
    const changes = [...this.changes.values()];
    this.changes.clear();
    if (!changes.length) return;
    for (const listener of [...this.listeners]) {
      try {
        listener(changes);
      } catch (error) {
        console.error("tidings: a session listener failed", error);
      }
    }
  }
}

// The connection: one WebSocket (or the HTTP fallback) shared by every joined session.
// The browser twin of tidings/client/client.py; docs/client-js.md lists its rules.
//
// It connects, resubscribes every session from its replica's seq, re-sends every
// unacknowledged send with its original client id (the server keeps one event per
// (session, author, client id), so a retry is exactly once), and reads until the link
// fails; then it waits (exponential backoff, full jitter) and tries again. After
// `fallbackAfter` failed attempts in a row it also starts the HTTP fallback — sends over
// POST …/events, events over SSE — and keeps retrying the WebSocket; when one opens the
// fallback stops and the WebSocket resumes from the replica's seq (the replica drops
// whatever arrives twice). Sends made while offline wait in a bounded queue kept in
// sessionStorage, so a reload does not lose them.

import { FATAL_CLOSE_CODES, RETRYABLE_CODES, backoffDelay, next } from "./machine.js";
import { Session } from "./session.js";

export const VERSION = "0.1.0";

export class TidingsError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "TidingsError";
    this.code = code;
  }
}

/** The claims of a JWT (not verified: the server does that). @param {string} token */
export function tokenClaims(token) {
  const part = token.split(".")[1] ?? "";
  try {
    const text = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    return JSON.parse(text);
  } catch {
    return {};
  }
}

/** `http://h:p` or `ws://h:p/…` (or "" for this page's origin) → [ws URL, http base]. @param {string} url */
export function urlsOf(url) {
  const base = globalThis.location ? globalThis.location.href : "http://127.0.0.1:8765/";
  const parsed = new URL(url || "/", base);
  const secure = parsed.protocol === "https:" || parsed.protocol === "wss:";
  const host = parsed.host;
  const path = parsed.protocol.startsWith("ws") && parsed.pathname !== "/" ? parsed.pathname : "/v1/ws";
  return [`${secure ? "wss" : "ws"}://${host}${path}`, `${secure ? "https" : "http"}://${host}`];
}

const DEFAULTS = {
  reconnectBaseMs: 500,
  reconnectCapMs: 30000,
  fallbackAfter: 3,
  connectTimeoutMs: 10000,
  joinTimeoutMs: 15000,
  heartbeatMs: /** @type {number | null} */ (null),
  debounceMs: 50,
  maxQueue: 1000,
  refreshMarginMs: 30000,
  clientName: `tidings-js/${VERSION}`,
};

export class Client {
  /**
   * @param {string} url
   * @param {{token?: string, tokenProvider?: () => Promise<string> | string} & Partial<typeof DEFAULTS> & {
   *   storage?: Storage | null, WebSocket?: typeof WebSocket, fetch?: typeof fetch, EventSource?: typeof EventSource,
   *   httpUrl?: string, onFrame?: (frame: any) => void}} [options]
   */
  constructor(url, options = {}) {
    if (!options.token && !options.tokenProvider) throw new TypeError("connect needs {token} or {tokenProvider}");
    this.options = { ...DEFAULTS, ...options };
    [this.wsUrl, this.httpUrl] = urlsOf(url);
    if (options.httpUrl) this.httpUrl = options.httpUrl.replace(/\/$/, "");
    this.WS = options.WebSocket ?? globalThis.WebSocket;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.ES = options.EventSource ?? globalThis.EventSource;
    this.storage = options.storage === undefined ? (globalThis.sessionStorage ?? null) : options.storage;
    /** @type {string} */
    this.state = "connecting";
    /** @type {string | null} */
    this.user = null;
    /** @type {string | null} */
    this.token = options.token ?? null;
    /** @type {Map<string, Session>} */
    this.sessions = new Map();
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {any} */
    this.link = null;
    this.attempts = 0;
    this.closing = false;
    /** @type {Map<string, EventSource> | null} the HTTP fallback's streams, while it runs */
    this.fallback = null;
    this.probing = false;
    /** @type {Error | null} */
    this.lastError = null;
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.timers = new Set();
    /** @type {Set<string>} sessions with an event fetch in flight */
    this.fetching = new Set();
    this.debounceMs = this.options.debounceMs;
    this.onOffline = () => this.wentOffline();
    this.onOnline = () => this.cameOnline();
  }

  // ------------------------------------------------------------ public surface

  /** Connect; resolves once connected (or in the HTTP fallback), rejects on a bad token or an unreachable server. */
  async start() {
    this.token = await this.freshToken();
    this.user = tokenClaims(this.token).sub ?? null;
    globalThis.addEventListener?.("offline", this.onOffline);
    globalThis.addEventListener?.("online", this.onOnline);
    const settled = new Promise((resolve, reject) => {
      const off = this.on("state", (/** @type {string} */ state) => {
        if (state === "connected" || state === "fallback") {
          off();
          resolve(undefined);
        } else if (state === "closed") {
          off();
          reject(this.lastError ?? new TidingsError("closed", "the client was closed"));
        }
      });
      this.later(this.options.connectTimeoutMs, () => {
        if (this.state !== "connected" && this.state !== "fallback" && this.state !== "offline") {
          off();
          const error = new TidingsError("unreachable", `cannot reach the Tidings server at ${this.wsUrl}`);
          this.fail(error);
          reject(error);
        }
      });
    });
    if (globalThis.navigator && globalThis.navigator.onLine === false) {
      // No network: usable at once (sends wait in the offline queue); connects when back.
      this.move("offline");
      settled.catch(() => {});
      return this;
    }
    this.openLink();
    await settled;
    return this;
  }

  /**
   * The session object at once, joining in the background (its state fills in when
   * subscribed; sends made meanwhile wait in the queue). `join` waits for the state.
   * @param {string} sessionId @returns {Session}
   */
  session(sessionId) {
    if (this.state === "closed") throw new TidingsError("closed", "the client is closed");
    let session = this.sessions.get(sessionId);
    if (session === undefined) {
      session = new Session(this, sessionId, this.user);
      this.sessions.set(sessionId, session);
      this.restoreQueued(session);
      if (this.link?.live) this.subscribe(this.link, session);
      else if (this.fallback) this.fallbackReceive(session);
    }
    return session;
  }

  /**
   * Join a session: resolves once its replica holds the session's state.
   * @param {string} sessionId @returns {Promise<Session>}
   */
  async join(sessionId) {
    const joined = this.session(sessionId);
    await new Promise((resolve, reject) => {
      const timer = this.later(this.options.joinTimeoutMs, () =>
        reject(new TidingsError("timeout", `joining ${sessionId} took over ${this.options.joinTimeoutMs} ms (state: ${this.state})`)),
      );
      joined.joinFailed = (/** @type {Error} */ error) => {
        clearTimeout(timer);
        reject(error);
      };
      joined.ready().then(() => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
    return joined;
  }

  /** Listen to `state` (state, previous) or `error` (error). Returns the function that stops listening. @param {"state" | "error"} name @param {Function} fn */
  on(name, fn) {
    const set = this.handlers.get(name) ?? new Set();
    this.handlers.set(name, set);
    set.add(fn);
    return () => set.delete(fn);
  }

  async close() {
    if (this.closing) return;
    this.closing = true;
    globalThis.removeEventListener?.("offline", this.onOffline);
    globalThis.removeEventListener?.("online", this.onOnline);
    for (const session of [...this.sessions.values()]) session.leave();
    this.dropLink(1000, "client closed");
    this.stopFallback();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.move("close");
  }

  /** One application round trip over the WebSocket, in milliseconds. */
  async ping() {
    const link = this.link;
    if (!link?.live) throw new TidingsError("unavailable", "not connected");
    const start = performance.now();
    await this.request(link, { type: "ping" });
    return performance.now() - start;
  }

  // HTTP helpers for the things the WebSocket does not do.

  /** @param {string} title @param {{agent?: string}} [options] */
  createSession(title, { agent } = {}) {
    return this.http("POST", "/v1/sessions", agent ? { title, agent } : { title });
  }

  listSessions() {
    return this.http("GET", "/v1/sessions");
  }

  /** @param {string} sessionId @param {string} user @param {string} [role] */
  addMember(sessionId, user, role = "member") {
    return this.http("POST", `/v1/sessions/${encodeURIComponent(sessionId)}/members`, { user, role });
  }

  /** @param {string} sessionId @param {string} user */
  removeMember(sessionId, user) {
    return this.http("DELETE", `/v1/sessions/${encodeURIComponent(sessionId)}/members/${encodeURIComponent(user)}`);
  }

  /** @param {string} method @param {string} path @param {unknown} [body] */
  async http(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.fetch(this.httpUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const value = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = value?.error ?? {};
      const failure = new TidingsError(error.code ?? "internal", error.message ?? `HTTP ${response.status}`);
      /** @type {any} */ (failure).status = response.status;
      /** @type {any} */ (failure).retryAfterMs = error.retry_after_ms ?? null;
      throw failure;
    }
    return value;
  }

  // ------------------------------------------------------------ state

  /** @param {any} input */
  move(input) {
    const previous = this.state;
    const state = next(previous, input);
    if (state === previous) return;
    this.state = state;
    this.emit("state", state, previous);
  }

  /** @param {string} name @param {...any} args */
  emit(name, ...args) {
    for (const fn of [...(this.handlers.get(name) ?? [])]) {
      try {
        fn(...args);
      } catch (error) {
        console.error(`tidings: a ${name} listener failed`, error);
      }
    }
  }

  /** @param {Error} error */
  fail(error) {
    this.lastError = error;
    this.emit("error", error);
    this.closing = true;
    this.dropLink(1000, "failed");
    this.stopFallback();
    for (const session of this.sessions.values()) session.joinFailed?.(error);
    this.move("fatal");
  }

  /** @param {number} ms @param {() => void} fn */
  later(ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  async freshToken() {
    const provider = this.options.tokenProvider;
    if (provider) this.token = await provider();
    if (!this.token) throw new TidingsError("unauthorized", "no token");
    return this.token;
  }

  // ------------------------------------------------------------ the WebSocket link

  openLink() {
    if (this.closing || this.link) return;
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new this.WS(this.wsUrl, ["tidings.v1"]);
    } catch (error) {
      this.linkLost(null, 1006, String(error));
      return;
    }
    const link = {
      ws,
      ids: 0,
      live: false,
      /** @type {Map<number, {resolve: Function, reject: Function}>} */
      waiters: new Map(),
      /** @type {Map<number, {session: string, clientId: string}>} */
      sends: new Map(),
      /** @type {Map<number, string>} subscribe request id → session */
      subscribes: new Map(),
      lastRx: Date.now(),
      heartbeatMs: this.options.heartbeatMs ?? 30000,
      /** @type {ReturnType<typeof setInterval> | null} */
      beat: null,
    };
    this.link = link;
    ws.onopen = () => {
      link.lastRx = Date.now();
      this.write(link, { type: "connect", id: ++link.ids, token: this.token, client: this.options.clientName });
    };
    ws.onmessage = (message) => {
      link.lastRx = Date.now();
      let value;
      try {
        value = JSON.parse(message.data);
      } catch {
        return;
      }
      const tap = this.options.onFrame;
      for (const frame of Array.isArray(value) ? value : [value]) {
        if (!frame || typeof frame.type !== "string") continue;
        if (tap) tap(frame);
        this.dispatch(frame, link);
      }
    };
    ws.onclose = (event) => this.linkLost(link, event.code, event.reason);
    ws.onerror = () => {};
  }

  /** @param {any} link @param {object} frame */
  write(link, frame) {
    if (link.ws.readyState === 1) link.ws.send(JSON.stringify(frame));
  }

  /** @param {number} code @param {string} reason */
  dropLink(code, reason) {
    const link = this.link;
    if (!link) return;
    this.link = null;
    if (link.beat !== null) clearInterval(link.beat);
    link.ws.onclose = null;
    link.ws.onmessage = null;
    try {
      link.ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  /** @param {any} link @param {number} code @param {string} reason */
  linkLost(link, code, reason) {
    if (link && this.link !== link) return;
    if (link?.beat) clearInterval(link.beat);
    this.link = null;
    if (this.closing || this.state === "offline") return;
    if (FATAL_CLOSE_CODES.has(code)) {
      this.fail(new TidingsError(code === 4001 ? "unauthorized" : "forbidden", reason || `closed with ${code}`));
      return;
    }
    this.attempts += 1;
    if (!this.fallback) this.move("lost");
    if (!this.fallback && this.attempts >= this.options.fallbackAfter) this.startFallback();
    const delay = backoffDelay(this.attempts - 1, { baseMs: this.options.reconnectBaseMs, capMs: this.options.reconnectCapMs });
    this.later(delay, () => this.reconnect());
  }

  async reconnect() {
    if (this.closing || this.link || this.state === "offline") return;
    try {
      if (this.options.tokenProvider) await this.freshToken();
    } catch (error) {
      this.fail(/** @type {Error} */ (error));
      return;
    }
    this.openLink();
  }

  /** @param {any} link */
  connected(link, /** @type {any} */ frame) {
    link.live = true;
    this.attempts = 0;
    this.user = frame.user ?? this.user;
    this.stopFallback();
    if (this.options.heartbeatMs === null && Number.isInteger(frame.heartbeat_ms)) link.heartbeatMs = frame.heartbeat_ms;
    link.beat = setInterval(() => this.heartbeat(link), Math.max(50, link.heartbeatMs / 2));
    this.armRefresh();
    for (const session of this.sessions.values()) this.subscribe(link, session);
    this.move("opened");
  }

  /** The server pings under the WebSocket layer, which pages cannot see: a quiet link gets an app ping, a silent one is dropped. @param {any} link */
  heartbeat(link) {
    const quiet = Date.now() - link.lastRx;
    if (quiet > 2 * link.heartbeatMs) {
      this.dropLink(4000, "heartbeat timeout");
      this.linkLost(link, 1006, "heartbeat timeout");
    } else if (quiet > link.heartbeatMs / 2) {
      this.write(link, { type: "ping", id: ++link.ids });
    }
  }

  armRefresh() {
    if (!this.options.tokenProvider || !this.token) return;
    const exp = tokenClaims(this.token).exp;
    if (typeof exp !== "number") return;
    const wait = Math.max(1000, exp * 1000 - Date.now() - this.options.refreshMarginMs);
    this.later(wait, async () => {
      const link = this.link;
      if (!link?.live) return;
      try {
        const token = await this.freshToken();
        this.write(link, { type: "refresh", id: ++link.ids, token });
        this.armRefresh();
      } catch (error) {
        this.emit("error", error);
      }
    });
  }

  /** @param {any} link @param {Session} session */
  subscribe(link, session) {
    const id = ++link.ids;
    link.subscribes.set(id, session.id);
    /** @type {Record<string, unknown>} */
    const frame = { type: "subscribe", id, session: session.id };
    if (session.replica.loaded) frame.after = session.replica.seq;
    this.write(link, frame);
    // Unacknowledged sends go again, with their client ids, after the subscribe.
    for (const clientId of session.outbox.keys()) this.transmit(session, clientId);
  }

  /** @param {Session} session @param {string} clientId */
  transmit(session, clientId) {
    const send = session.outbox.get(clientId);
    if (!send) return;
    const link = this.link;
    if (link?.live) {
      const id = ++link.ids;
      link.sends.set(id, { session: session.id, clientId });
      this.write(link, { type: "send", id, session: session.id, client_id: clientId, kind: send.kind, data: send.data });
    } else if (this.fallback) {
      this.postSend(session, clientId);
    }
  }

  /** @param {any} frame @param {any} link */
  dispatch(frame, link) {
    const session = typeof frame.session === "string" ? this.sessions.get(frame.session) : undefined;
    switch (frame.type) {
      case "connected":
        this.connected(link, frame);
        return;
      case "subscribed":
        link?.subscribes?.delete(frame.re);
        session?.subscribed(frame.seq, frame.snapshot);
        return;
      case "event":
        session?.event(frame);
        return;
      case "stream":
        session?.stream(frame.message_id, frame.offset, frame.text);
        return;
      case "presence":
        session?.presence(frame.online ?? []);
        return;
      case "signal":
        session?.signalled({ name: frame.name, from: frame.from, data: frame.data });
        return;
      case "ack":
        link?.sends?.delete(frame.re);
        session?.ack(frame.client_id, frame.seq, frame.event_id);
        return;
      case "error":
        this.error(frame, link, session);
        return;
      default:
        if (link && typeof frame.re === "number") {
          const waiter = link.waiters.get(frame.re);
          link.waiters.delete(frame.re);
          waiter?.resolve(frame);
        }
    }
  }

  /** @param {any} frame @param {any} link @param {Session | undefined} session */
  error(frame, link, session) {
    const send = link && typeof frame.re === "number" ? link.sends.get(frame.re) : undefined;
    if (send) {
      link.sends.delete(frame.re);
      const owner = this.sessions.get(send.session);
      if (!owner) return;
      if (RETRYABLE_CODES.has(frame.code)) {
        this.later(frame.retry_after_ms ?? 1000, () => this.transmit(owner, send.clientId));
      } else {
        owner.refused(send.clientId, frame.code, frame.message);
      }
      return;
    }
    const subscribing = link && typeof frame.re === "number" ? link.subscribes.get(frame.re) : undefined;
    if (subscribing) {
      link.subscribes.delete(frame.re);
      const target = this.sessions.get(subscribing);
      if (target && !target.replica.loaded) {
        this.sessions.delete(subscribing);
        target.joinFailed?.(new TidingsError(frame.code, frame.message));
      } else {
        target?.end(frame.message);
      }
      return;
    }
    if (session && frame.re === undefined && frame.code === "forbidden") {
      session.end(frame.message);
      return;
    }
    if (link && typeof frame.re === "number") {
      const waiter = link.waiters.get(frame.re);
      link.waiters.delete(frame.re);
      waiter?.reject(new TidingsError(frame.code, frame.message));
    }
    if (frame.code === "unauthorized" && !link?.live) this.lastError = new TidingsError("unauthorized", frame.message);
  }

  /** @param {any} link @param {object} frame @returns {Promise<any>} */
  request(link, frame) {
    const id = ++link.ids;
    return new Promise((resolve, reject) => {
      link.waiters.set(id, { resolve, reject });
      this.write(link, { ...frame, id });
    });
  }

  // ------------------------------------------------------------ what sessions ask for

  /** @param {Session} session @param {string} name @param {object} data */
  signal(session, name, data) {
    if (this.link?.live) this.write(this.link, { type: "signal", session: session.id, name, data });
  }

  /** @param {Session} session @param {string} messageId */
  async cancel(session, messageId) {
    if (!this.link?.live) throw new TidingsError("unavailable", "not connected");
    await this.request(this.link, { type: "cancel", session: session.id, message_id: messageId });
  }

  /** @param {Session} session */
  leave(session) {
    this.sessions.delete(session.id);
    if (this.link?.live) this.write(this.link, { type: "unsubscribe", id: ++this.link.ids, session: session.id });
    const stream = this.fallback?.get(session.id);
    stream?.close();
    this.fallback?.delete(session.id);
    this.persist(session);
  }

  checkQueue() {
    if (this.state === "closed") throw new TidingsError("closed", "the client is closed");
    let queued = 0;
    for (const session of this.sessions.values()) queued += session.outbox.size;
    if (queued >= this.options.maxQueue) {
      throw new TidingsError("queue_full", `${queued} sends are waiting already (maxQueue ${this.options.maxQueue})`);
    }
  }

  /** Missing events: read them over HTTP (one fetch per session at a time). @param {Session} session @param {number} after @param {number} last */
  async fetchEvents(session, after, last) {
    if (this.fetching.has(session.id)) return;
    this.fetching.add(session.id);
    try {
      const limit = Math.min(1000, Math.max(1, last - after));
      const found = await this.http("GET", `/v1/sessions/${encodeURIComponent(session.id)}/events?after=${after}&limit=${limit}`);
      this.fetching.delete(session.id);
      for (const event of found.events ?? []) session.event(event);
    } catch {
      this.fetching.delete(session.id);
    }
  }

  /** @param {Session} session @param {string} messageId */
  async fetchMessage(session, messageId) {
    try {
      session.message(await this.http("GET", `/v1/sessions/${encodeURIComponent(session.id)}/messages/${encodeURIComponent(messageId)}`));
    } catch {
      // The stream's end event carries the whole text anyway.
    }
  }

  // ------------------------------------------------------------ the offline queue

  storageKey() {
    return `tidings:outbox:${this.wsUrl}:${this.user ?? ""}`;
  }

  readQueue() {
    try {
      return JSON.parse(this.storage?.getItem(this.storageKey()) ?? "{}");
    } catch {
      return {};
    }
  }

  /** @param {Session} session */
  persist(session) {
    if (!this.storage) return;
    const all = this.readQueue();
    const entries = [...session.outbox].map(([clientId, send]) => [clientId, send.kind, send.data]);
    if (entries.length) all[session.id] = entries;
    else delete all[session.id];
    try {
      this.storage.setItem(this.storageKey(), JSON.stringify(all));
    } catch {
      // Storage full or denied: the queue still lives in memory.
    }
  }

  /** @param {Session} session */
  restoreQueued(session) {
    for (const [clientId, kind, data] of this.readQueue()[session.id] ?? []) session.restore(clientId, kind, data);
  }

  // ------------------------------------------------------------ offline and online

  wentOffline() {
    if (this.closing) return;
    this.move("offline");
    this.dropLink(1000, "offline");
    this.stopFallback();
  }

  cameOnline() {
    if (this.closing || this.state !== "offline") return;
    this.move("online");
    this.attempts = 0;
    this.reconnect();
  }

  // ------------------------------------------------------------ the HTTP fallback

  /** Start the HTTP fallback, once the server answers over HTTP (else keep reconnecting). */
  async startFallback() {
    if (this.fallback || this.closing || this.probing) return;
    this.probing = true;
    let reachable = false;
    try {
      reachable = (await this.fetch(`${this.httpUrl}/healthz`)).ok;
    } catch {
      reachable = false;
    } finally {
      this.probing = false;
    }
    if (!reachable || this.fallback || this.closing || this.link?.live || this.state === "offline") {
      if (!reachable) this.move("lost");
      return;
    }
    this.fallback = new Map();
    for (const session of this.sessions.values()) {
      this.fallbackReceive(session);
      for (const clientId of session.outbox.keys()) this.postSend(session, clientId);
    }
    this.move("fallback");
  }

  stopFallback() {
    if (!this.fallback) return;
    for (const stream of this.fallback.values()) stream.close();
    this.fallback = null;
  }

  /** @param {Session} session */
  fallbackReceive(session) {
    if (!this.fallback || !this.ES) return;
    const params = new URLSearchParams({ token: this.token ?? "" });
    if (session.replica.loaded) params.set("after", String(session.replica.seq));
    const stream = new this.ES(`${this.httpUrl}/v1/sessions/${encodeURIComponent(session.id)}/sse?${params}`);
    this.fallback.set(session.id, stream);
    /** @param {MessageEvent} message */
    const onFrame = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "subscribed") session.subscribed(frame.seq, frame.snapshot);
      else if (frame.type === "error") session.end(frame.message);
      else this.dispatch(frame, null);
    };
    stream.onmessage = onFrame;
    stream.addEventListener("snapshot", /** @type {any} */ (onFrame));
    stream.addEventListener("error", /** @type {any} */ ((/** @type {MessageEvent} */ event) => {
      if (event.data) onFrame(event);
    }));
  }

  /** @param {Session} session @param {string} clientId */
  async postSend(session, clientId) {
    const send = session.outbox.get(clientId);
    if (!send || !this.fallback) return;
    try {
      const ack = await this.http("POST", `/v1/sessions/${encodeURIComponent(session.id)}/events`, {
        client_id: clientId,
        kind: send.kind,
        data: send.data,
      });
      session.ack(ack.client_id, ack.seq, ack.event_id);
    } catch (error) {
      const failure = /** @type {any} */ (error);
      if (failure instanceof TidingsError && !RETRYABLE_CODES.has(failure.code) && failure.code !== "internal") {
        session.refused(clientId, failure.code, failure.message);
      } else {
        // Network trouble or a retryable refusal: the send stays queued, tried again later.
        this.later(failure?.retryAfterMs ?? 1000, () => this.transmit(session, clientId));
      }
    }
  }
}

/**
 * Connect to a Tidings server: `await connect(url, {token})` or `{tokenProvider}`.
 * @param {string} url @param {ConstructorParameters<typeof Client>[1]} options
 */
export async function connect(url, options) {
  return new Client(url, options).start();
}

// The local copy of one session, kept by applying events in `seq` order. No I/O.
//
// The browser twin of tidings/client/replica.py, rule for rule (the shared vectors in
// tests/vectors/ hold both to the same results). Everything the network delivers is fed in
// (loadSnapshot, receiveEvent, receiveStream, receiveMessage, acks and errors of sends);
// the replica updates `state` and records what the I/O layer must do next: fetch missing
// events (`gap`), refetch a streaming message (takeRefetches), settle send handles
// (takeResolved) and tell listeners what changed (takeTouched).
//
// Optimistic sends: a message sent here enters the state at once, `pending`, keyed by its
// client id. It becomes the confirmed message when its event is applied (recognised by its
// client_id) or, when that event was skipped (a snapshot after a reconnect), when the ack
// is known and the replica has reached its seq. The entry keeps its key throughout.

import { OrderingBuffer } from "./ordering.js";

/** Chunks kept per message while waiting for the text before them. */
export const MAX_EARLY_CHUNKS = 1000;

/**
 * @typedef {object} ChatMessage
 * @property {string} key stable: the client id of a local send, else the server id
 * @property {string | null} id
 * @property {number | null} seq
 * @property {string} role
 * @property {string} author
 * @property {string} content
 * @property {boolean} isCode
 * @property {"pending" | "complete" | "streaming" | "failed"} status
 * @property {string | null} clientId
 * @property {number | null} createdAt
 * @property {string | null} error
 * @property {Record<string, number> | null} usage
 */

/**
 * @typedef {object} Resolved a send's fate
 * @property {string} clientId
 * @property {boolean} ok
 * @property {number | null} seq
 * @property {string | null} eventId
 * @property {string | null} error
 * @property {string | null} code
 */

const MESSAGE_CREATED = "message.created";
const CARD_ADDED = "card.added";

/** `m_42` → 42; 0 when not of that form. @param {string} id */
export function messageSeq(id) {
  const match = /^[a-z]+_(\d+)$/.exec(id);
  return match ? Number(match[1]) : 0;
}

/** @param {string} kind @param {number} seq */
function eventId(kind, seq) {
  const prefix = kind === MESSAGE_CREATED ? "m" : kind === CARD_ADDED ? "c" : "e";
  return `${prefix}_${seq}`;
}

/** Code points, as the server counts offsets. @param {string} text */
export function cpLength(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/** The code points of `text` from `start` on. @param {string} text @param {number} start */
function cpSlice(text, start) {
  return Array.from(text).slice(start).join("");
}

const USAGE_KEYS = { prompt: ["prompt_tokens", "prompt"], completion: ["completion_tokens", "completion"] };

/** @param {Record<string, unknown>} usage @param {"prompt" | "completion"} name */
function usageCount(usage, name) {
  for (const key of USAGE_KEYS[name]) {
    const value = usage[key];
    if (Number.isInteger(value) && /** @type {number} */ (value) > 0) return /** @type {number} */ (value);
  }
  return 0;
}

function emptyStats() {
  return { messages: 0, tokens: { prompt: 0, completion: 0 }, cards: 0, participants: 0 };
}

/** @param {any} value */
const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

export class Replica {
  /** @param {string} sessionId @param {{user?: string | null}} [options] */
  constructor(sessionId, { user = null } = {}) {
    this.sessionId = sessionId;
    this.user = user;
    this.loaded = false;
    this.needsSnapshot = false;
    this.state = {
      sessionId,
      seq: 0,
      title: "",
      status: "active",
      version: 0,
      /** @type {Record<string, unknown>} */
      metadata: {},
      /** @type {Record<string, string>} */
      members: {},
      /** @type {string[]} */
      presence: [],
      /** @type {Map<string, Record<string, unknown>>} */
      cards: new Map(),
      /** @type {Record<string, unknown>} */
      agent: { status: "idle" },
      stats: emptyStats(),
    };
    /** Confirmed messages by server id, in seq order. @type {Map<string, ChatMessage>} */
    this.confirmed = new Map();
    /** Local sends not yet confirmed, by client id, in send order. @type {Map<string, ChatMessage>} */
    this.pending = new Map();
    this.order = new OrderingBuffer(1);
    /** @type {Map<string, {kind: string, ackSeq: number | null, eventId: string | null}>} */
    this.sends = new Map();
    /** server id → key, for messages sent from here @type {Map<string, string>} */
    this.keys = new Map();
    /** key → server id @type {Map<string, string>} */
    this.ids = new Map();
    /** @type {Map<string, Array<[number, string]>>} */
    this.early = new Map();
    /** @type {Set<string>} */
    this.refetch = new Set();
    /** @type {Resolved[]} */
    this.resolved = [];
    /** @type {Map<string, [string, string | null]>} */
    this.touched = new Map();
    /** @type {Set<string>} */
    this.participants = new Set();
  }

  // ------------------------------------------------------------ outputs for the I/O layer

  get seq() {
    return this.state.seq;
  }

  /** @returns {[number, number] | null} seqs to fetch: events after them are waiting */
  get gap() {
    return this.order.gap;
  }

  /** Every message: confirmed ones in log order, then local sends still pending. */
  get messages() {
    return [...this.confirmed.values(), ...this.pending.values()];
  }

  /** Messages whose stream text has a hole: fetch them (GET …/messages/{id}). */
  takeRefetches() {
    const out = [...this.refetch];
    this.refetch.clear();
    return out;
  }

  takeResolved() {
    const out = this.resolved;
    this.resolved = [];
    return out;
  }

  /** What changed since the last call, in first-touched order, each pair once. */
  takeTouched() {
    const out = [...this.touched.values()];
    this.touched.clear();
    return out;
  }

  /** Client ids of sends with no ack yet (to re-send after a reconnect), in order. */
  unacked() {
    return [...this.sends].filter(([, send]) => send.ackSeq === null).map(([id]) => id);
  }

  /** @param {string} key */
  messageByKey(key) {
    let found = this.pending.get(key) ?? this.confirmed.get(key);
    if (found === undefined && this.ids.has(key)) found = this.confirmed.get(/** @type {string} */ (this.ids.get(key)));
    return found;
  }

  /** @param {string} what @param {string | null} [key] */
  touch(what, key = null) {
    this.touched.set(`${what}\u0000${key ?? ""}`, [what, key]);
  }

  /** @param {string} messageId @param {string} key */
  link(messageId, key) {
    this.keys.set(messageId, key);
    this.ids.set(key, messageId);
  }

  // ------------------------------------------------------------ snapshot

  /**
   * Take the session's state as of `seq`. Messages older than the snapshot's window are
   * kept; pending sends stay.
   * @param {number} seq @param {Record<string, any>} snapshot
   */
  loadSnapshot(seq, snapshot) {
    const state = this.state;
    if ("title" in snapshot) state.title = String(snapshot.title);
    if ("status" in snapshot) state.status = String(snapshot.status);
    if ("version" in snapshot) state.version = Number(snapshot.version);
    state.metadata = { ...(snapshot.metadata ?? {}) };
    state.members = {};
    for (const member of snapshot.members ?? []) {
      if (isObject(member) && "user" in member) state.members[String(member.user)] = String(member.role);
    }
    state.presence = [...(snapshot.presence ?? [])];
    state.cards = new Map();
    for (const card of snapshot.cards ?? []) {
      if (isObject(card) && "id" in card) state.cards.set(String(card.id), { ...card });
    }
    state.agent = { ...(snapshot.agent ?? { status: "idle" }) };
    const stats = snapshot.stats;
    if (isObject(stats)) {
      state.stats = {
        messages: Number(stats.messages ?? 0),
        tokens: { ...(stats.tokens ?? { prompt: 0, completion: 0 }) },
        cards: Number(stats.cards ?? state.cards.size),
        participants: Number(stats.participants ?? 0),
      };
    }
    const incoming = (snapshot.messages ?? []).filter(isObject);
    const oldest = incoming.length ? Math.min(...incoming.map((m) => messageSeq(String(m.id ?? "")))) : seq + 1;
    /** @type {Map<string, ChatMessage>} */
    const merged = new Map();
    for (const [id, message] of this.confirmed) {
      if ((message.seq ?? 0) < oldest) merged.set(id, message);
    }
    for (const raw of incoming) {
      const message = this.fromWire(raw);
      const old = this.confirmed.get(message.id ?? "");
      // Never shrink a reply we already hold more of.
      if (
        old !== undefined &&
        old.status === "streaming" &&
        message.status === "streaming" &&
        cpLength(old.content) > cpLength(message.content)
      ) {
        message.content = old.content;
      }
      merged.set(message.id === null ? message.key : message.id, message);
      this.touch("message", message.key);
    }
    for (const [id, message] of this.confirmed) {
      if (!merged.has(id)) this.touch("message", message.key);
    }
    this.confirmed = merged;
    this.participants = new Set(
      [...merged.values()].filter((m) => m.role === "user" && m.author).map((m) => m.author),
    );
    state.seq = seq;
    this.order.reset(seq + 1);
    this.loaded = true;
    this.needsSnapshot = false;
    for (const what of ["title", "status", "version", "metadata", "presence", "agent", "stats", "members", "cards"]) {
      this.touch(what);
    }
    this.settleAcked();
  }

  /** @param {Record<string, any>} raw @returns {ChatMessage} */
  fromWire(raw) {
    const id = String(raw.id ?? "");
    const key = this.keys.get(id) ?? id;
    return {
      key,
      id,
      seq: Number(raw.seq || messageSeq(id)),
      role: String(raw.role ?? "user"),
      author: String(raw.author ?? ""),
      content: String(raw.content ?? ""),
      isCode: Boolean(raw.is_code ?? false),
      status: raw.status ?? "complete",
      clientId: key !== id ? key : null,
      createdAt: raw.created_at ?? null,
      error: raw.error ?? null,
      usage: isObject(raw.usage) ? { ...raw.usage } : null,
    };
  }

  // ------------------------------------------------------------ events

  /** One `event` frame (or an event from GET …/events), in any order, maybe twice. @param {Record<string, any>} event */
  receiveEvent(event) {
    if (event.session !== this.sessionId || !Number.isInteger(event.seq)) return;
    let ready;
    try {
      ready = this.order.push(event.seq, event);
    } catch (error) {
      if (error instanceof RangeError) {
        this.needsSnapshot = true;
        return;
      }
      throw error;
    }
    for (const item of ready) this.apply(item);
    if (ready.length) this.settleAcked();
  }

  /** @param {Iterable<Record<string, any>>} events */
  receiveEvents(events) {
    for (const event of events) this.receiveEvent(event);
  }

  /** @param {Record<string, any>} event */
  apply(event) {
    const state = this.state;
    const kind = event.kind;
    const data = event.data ?? {};
    const clientId = event.client_id;
    const seq = Number(event.seq);
    if (kind === MESSAGE_CREATED) {
      this.messageCreated(data.message ?? {}, clientId, seq);
    } else if (kind === "message.completed") {
      const usage = data.usage;
      if (isObject(usage)) {
        state.stats.tokens.prompt = (state.stats.tokens.prompt ?? 0) + usageCount(usage, "prompt");
        state.stats.tokens.completion = (state.stats.tokens.completion ?? 0) + usageCount(usage, "completion");
        this.touch("stats");
      }
      const message = this.confirmed.get(String(data.message_id ?? ""));
      if (message !== undefined) {
        message.content = String(data.content ?? message.content);
        message.status = "complete";
        if (isObject(usage)) message.usage = { ...usage };
        this.early.delete(message.id ?? "");
        this.touch("message", message.key);
      }
    } else if (kind === "message.failed") {
      const message = this.confirmed.get(String(data.message_id ?? ""));
      if (message !== undefined) {
        message.status = "failed";
        message.error = String(data.error ?? "");
        this.early.delete(message.id ?? "");
        this.touch("message", message.key);
      }
    } else if (kind === CARD_ADDED) {
      const card = { ...(data.card ?? {}) };
      if ("id" in card) {
        state.cards.set(String(card.id), card);
        this.touch("card", String(card.id));
      }
    } else if (kind === "card.removed") {
      const cardId = String(data.card_id ?? "");
      if (state.cards.delete(cardId)) this.touch("card", cardId);
    } else if (kind === "session.updated") {
      const changes = data.changes ?? {};
      for (const name of ["title", "status", "metadata"]) {
        if (name in changes) {
          if (name === "metadata") state.metadata = { ...changes.metadata };
          else if (name === "title") state.title = changes.title;
          else state.status = changes.status;
          this.touch(name);
        }
      }
      state.version = Number.isInteger(data.version) ? data.version : state.version + 1;
      this.touch("version");
    } else if (kind === "member.added") {
      state.members[String(data.user)] = String(data.role);
      this.touch("member", String(data.user));
    } else if (kind === "member.removed") {
      delete state.members[String(data.user)];
      this.touch("member", String(data.user));
    } else if (kind === "agent.status") {
      state.agent = { ...data };
      this.touch("agent");
    }
    if (kind === CARD_ADDED || kind === "card.removed") {
      state.stats.cards = state.cards.size;
      this.touch("stats");
    }
    state.seq = seq;
    if (typeof clientId === "string" && this.sends.has(clientId)) {
      const send = /** @type {{eventId: string | null}} */ (this.sends.get(clientId));
      this.sends.delete(clientId);
      this.resolved.push({
        clientId,
        ok: true,
        seq,
        eventId: send.eventId ?? eventId(kind, seq),
        error: null,
        code: null,
      });
    }
  }

  /** @param {Record<string, any>} raw @param {unknown} clientId @param {number} seq */
  messageCreated(raw, clientId, seq) {
    const state = this.state;
    const message = this.fromWire({ ...raw, seq });
    const pending = typeof clientId === "string" ? this.pending.get(clientId) : undefined;
    if (pending !== undefined) {
      this.pending.delete(/** @type {string} */ (clientId));
      message.key = pending.key;
      this.link(/** @type {string} */ (message.id), pending.key);
    }
    if (typeof clientId === "string") message.clientId = clientId;
    this.confirmed.set(/** @type {string} */ (message.id), message);
    state.stats.messages += 1;
    if (message.role === "user" && !this.participants.has(message.author)) {
      this.participants.add(message.author);
      state.stats.participants += 1;
    }
    this.touch("stats");
    this.touch("message", message.key);
    if (message.status === "streaming" && this.early.has(message.id ?? "")) this.drainEarly(message);
  }

  /** Confirm sends whose ack is known and whose seq the replica has reached. */
  settleAcked() {
    for (const [clientId, send] of [...this.sends]) {
      if (send.ackSeq === null || send.ackSeq > this.state.seq) continue;
      this.sends.delete(clientId);
      const pending = this.pending.get(clientId);
      if (pending !== undefined) {
        this.pending.delete(clientId);
        const confirmed = this.confirmed.get(send.eventId ?? "");
        if (confirmed !== undefined) {
          confirmed.key = pending.key;
          confirmed.clientId = clientId;
          this.link(confirmed.id ?? "", pending.key);
        }
        this.touch("message", pending.key);
      }
      this.resolved.push({ clientId, ok: true, seq: send.ackSeq, eventId: send.eventId, error: null, code: null });
    }
  }

  // ------------------------------------------------------------ streams and refetches

  /** A `stream` frame: text at `offset` (code points) of a reply. @param {string} messageId @param {number} offset @param {string} text */
  receiveStream(messageId, offset, text) {
    const message = this.confirmed.get(messageId);
    if (message === undefined || message.status !== "streaming") {
      if (message === undefined && !this.isSettled(messageId)) this.rememberEarly(messageId, offset, text);
      return;
    }
    this.grow(message, offset, text);
  }

  /** @param {string} messageId */
  isSettled(messageId) {
    const seq = messageSeq(messageId);
    return seq > 0 && seq <= this.state.seq;
  }

  /** @param {string} messageId @param {number} offset @param {string} text */
  rememberEarly(messageId, offset, text) {
    const chunks = this.early.get(messageId) ?? [];
    this.early.set(messageId, chunks);
    if (chunks.length < MAX_EARLY_CHUNKS) chunks.push([offset, text]);
  }

  /** @param {ChatMessage} message @param {number} offset @param {string} text */
  grow(message, offset, text) {
    const held = cpLength(message.content);
    if (offset + cpLength(text) <= held) return; // already have it
    if (offset > held) {
      this.rememberEarly(message.id ?? "", offset, text);
      this.refetch.add(message.id ?? "");
      return;
    }
    message.content += cpSlice(text, held - offset);
    this.touch("message", message.key);
    this.drainEarly(message);
  }

  /** @param {ChatMessage} message */
  drainEarly(message) {
    let chunks = this.early.get(message.id ?? "") ?? [];
    this.early.delete(message.id ?? "");
    let grew = true;
    while (chunks.length && grew) {
      grew = false;
      let held = cpLength(message.content);
      /** @type {Array<[number, string]>} */
      const rest = [];
      const sorted = [...chunks].sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
      for (const [offset, text] of sorted) {
        if (offset + cpLength(text) <= held) continue;
        if (offset <= held) {
          message.content += cpSlice(text, held - offset);
          held = cpLength(message.content);
          grew = true;
        } else {
          rest.push([offset, text]);
        }
      }
      chunks = rest;
    }
    if (grew || !chunks.length) this.touch("message", message.key);
    if (chunks.length) {
      this.early.set(message.id ?? "", chunks);
      this.refetch.add(message.id ?? "");
    }
  }

  /** A message refetched over HTTP: a streaming reply's content so far. @param {Record<string, any>} raw */
  receiveMessage(raw) {
    const message = this.confirmed.get(String(raw.id ?? ""));
    if (message === undefined || message.status !== "streaming") return;
    const content = String(raw.content ?? "");
    if (cpLength(content) > cpLength(message.content) && content.startsWith(message.content)) {
      message.content = content;
      this.touch("message", message.key);
    }
    this.drainEarly(message);
  }

  streamingIds() {
    return [...this.confirmed.values()].filter((m) => m.status === "streaming" && m.id).map((m) => /** @type {string} */ (m.id));
  }

  // ------------------------------------------------------------ local sends

  /**
   * Track a send; a `message` also enters the state at once, pending.
   * @param {string} clientId @param {string} kind @param {Record<string, any>} data @param {{author?: string}} [options]
   * @returns {ChatMessage | null}
   */
  addSend(clientId, kind, data, { author } = {}) {
    this.sends.set(clientId, { kind, ackSeq: null, eventId: null });
    if (kind !== "message") return null;
    /** @type {ChatMessage} */
    const message = {
      key: clientId,
      id: null,
      seq: null,
      role: "user",
      author: author ?? this.user ?? "",
      content: String(data.content ?? ""),
      isCode: Boolean(data.is_code ?? false),
      status: "pending",
      clientId,
      createdAt: null,
      error: null,
      usage: null,
    };
    this.pending.set(clientId, message);
    this.touch("message", clientId);
    return message;
  }

  /** @param {string} clientId @param {number} seq @param {string} eventId */
  receiveAck(clientId, seq, eventId) {
    const send = this.sends.get(clientId);
    if (send === undefined) return; // already confirmed by its event
    send.ackSeq = seq;
    send.eventId = eventId;
    this.settleAcked();
  }

  /** The server refused the send: the optimistic entry stays, marked failed. @param {string} clientId @param {string} error @param {string | null} [code] */
  sendFailed(clientId, error, code = null) {
    if (!this.sends.delete(clientId)) return;
    const pending = this.pending.get(clientId);
    if (pending !== undefined) {
      pending.status = "failed";
      pending.error = error;
      this.touch("message", clientId);
    }
    this.resolved.push({ clientId, ok: false, seq: null, eventId: null, error, code });
  }

  /** Forget a failed local message (before a retry under a new client id). @param {string} key */
  dropPending(key) {
    if (this.pending.delete(key)) this.touch("message", key);
  }
}

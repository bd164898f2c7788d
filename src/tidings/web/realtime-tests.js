// `window.runRealTimeTests()`: eight checks of a live deployment, run from the page against
// the server that served it, in a probe session the tester creates and archives.
//
// Each check measures and compares to a threshold (overridable); the report is JSON:
// {ok, started, duration_ms, session, checks: [{name, ok, figures, threshold, error?}]}.
// Wire-level checks read the frames as they arrive on the socket (`onFrame`), before the
// replica repairs anything, so a deployment that drops, repeats or reorders frames fails.

import { connect } from "./tidings.js";

export const THRESHOLDS = Object.freeze({
  connect_ms: 2000, // latency: time to `connected`
  rtt_p95_ms: 250, // latency: ping round trip p95
  ack_p95_ms: 500, // latency: send → ack p95
  rate_min_ratio: 0.6, // frequency: received rate ÷ sent rate, at least
  jitter_ms: 150, // frequency: stdev of arrival intervals, at most
  recovery_ms: 10000, // error recovery: forced disconnect → reply complete
  heartbeat_ms: 1500, // stability: longest ping round trip over the run
  delivery_p95_ms: 1000, // concurrency: broadcast delivery p95
});

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {number[]} values @param {number} q */
function quantile(values, q) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const round = (/** @type {number} */ x) => Math.round(x * 100) / 100;

/** @param {() => boolean} predicate @param {number} timeoutMs @param {string} what */
async function until(predicate, timeoutMs, what) {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Events of `session` as received on the wire, per client. */
class Tap {
  constructor() {
    /** @type {any[]} */
    this.events = [];
    /** @type {any[]} */
    this.streams = [];
  }

  /** @param {any} frame */
  take = (frame) => {
    if (frame.type === "event") this.events.push({ ...frame, at: performance.now() });
    else if (frame.type === "stream") this.streams.push(frame);
  };

  /** seqs of one session's events, as received @param {string} session */
  seqs(session) {
    return this.events.filter((e) => e.session === session).map((e) => e.seq);
  }
}

/** Wire seqs must run up one by one: no gap, no duplicate, no reorder. @param {number[]} seqs */
function wireProblems(seqs) {
  const problems = [];
  for (let i = 1; i < seqs.length; i += 1) {
    if (seqs[i] === seqs[i - 1]) problems.push(`duplicate ${seqs[i]}`);
    else if (seqs[i] < seqs[i - 1]) problems.push(`reorder ${seqs[i - 1]}→${seqs[i]}`);
    else if (seqs[i] !== seqs[i - 1] + 1) problems.push(`gap ${seqs[i - 1]}→${seqs[i]}`);
  }
  return problems;
}

export class ProductionRealTimeTester {
  /**
   * @param {{url?: string, token: string | null, clients?: number, messages?: number,
   *   thresholds?: Partial<typeof THRESHOLDS>, log?: (line: string) => void}} options
   */
  constructor({ url = location.origin, token, clients = 4, messages = 20, thresholds = {}, log = () => {} }) {
    if (!token) throw new Error("runRealTimeTests needs a token (sign in first)");
    this.url = url;
    this.token = token;
    this.clientCount = clients;
    this.messageCount = messages;
    this.thresholds = { ...THRESHOLDS, ...thresholds };
    this.log = log;
    /** @type {import("./lib/client.js").Client[]} */
    this.open = [];
    /** @type {string | null} */
    this.sessionId = null;
    /** @type {string | null} */
    this.replySessionId = null;
  }

  /** @param {Tap} [tap] */
  async client(tap) {
    const client = await connect(this.url, {
      token: this.token,
      onFrame: tap?.take,
      storage: null,
      reconnectBaseMs: 100,
      reconnectCapMs: 1000,
      fallbackAfter: 1000,
    });
    this.open.push(client);
    return client;
  }

  async run() {
    const started = new Date().toISOString();
    const t0 = performance.now();
    const owner = await this.client();
    // One session without an assistant for the traffic checks, one with the echo
    // assistant for the mid-reply recovery check (replies would skew the others' timing).
    this.sessionId = (await owner.createSession(`probe ${started}`, { agent: "none" })).id;
    this.replySessionId = (await owner.createSession(`probe ${started} (replies)`, { agent: "echo" })).id;
    /** @type {any[]} */
    const checks = [];
    const names = ["latency", "frequency", "races", "leaks", "recovery", "stability", "ordering", "concurrency"];
    for (const name of names) {
      const check = { name, ok: false, figures: {}, threshold: {} };
      const checkStarted = performance.now();
      try {
        await /** @type {any} */ (this)[name](check);
      } catch (error) {
        check.ok = false;
        check.error = String(/** @type {Error} */ (error).message ?? error);
      }
      check.duration_ms = round(performance.now() - checkStarted);
      this.log(`${name}: ${check.ok ? "pass" : "FAIL"} ${JSON.stringify(check.figures)}`);
      checks.push(check);
    }
    try {
      for (const id of [this.sessionId, this.replySessionId]) {
        const session = await owner.join(id);
        await session.update({ status: "archived" }).confirmed;
      }
    } catch {
      // The report matters more than the clean-up.
    }
    for (const client of this.open.splice(0)) await client.close();
    return { ok: checks.every((c) => c.ok), started, duration_ms: round(performance.now() - t0), session: this.sessionId, checks };
  }

  /** @param {any} check */
  async latency(check) {
    const t = this.thresholds;
    const start = performance.now();
    const client = await this.client();
    const connectMs = performance.now() - start;
    const session = await client.join(/** @type {string} */ (this.sessionId));
    const rtts = [];
    for (let i = 0; i < 20; i += 1) rtts.push(await client.ping());
    const acks = [];
    for (let i = 0; i < 10; i += 1) {
      const sent = performance.now();
      await session.send("card.add", { title: `latency ${i}`, content: "x" }).confirmed;
      acks.push(performance.now() - sent);
    }
    check.figures = {
      connect_ms: round(connectMs),
      rtt_p50_ms: round(quantile(rtts, 0.5)),
      rtt_p95_ms: round(quantile(rtts, 0.95)),
      ack_p50_ms: round(quantile(acks, 0.5)),
      ack_p95_ms: round(quantile(acks, 0.95)),
    };
    check.threshold = { connect_ms: t.connect_ms, rtt_p95_ms: t.rtt_p95_ms, ack_p95_ms: t.ack_p95_ms };
    check.ok = connectMs <= t.connect_ms && check.figures.rtt_p95_ms <= t.rtt_p95_ms && check.figures.ack_p95_ms <= t.ack_p95_ms;
  }

  /** A steady 10/s of updates arrives at that rate, with bounded jitter. @param {any} check */
  async frequency(check) {
    const tap = new Tap();
    const receiver = await this.client(tap);
    await receiver.join(/** @type {string} */ (this.sessionId));
    const sender = await (await this.client()).join(/** @type {string} */ (this.sessionId));
    const id = /** @type {string} */ (this.sessionId);
    const from = tap.events.length;
    const count = 20;
    const intervalMs = 100;
    const start = performance.now();
    for (let i = 0; i < count; i += 1) {
      sender.update({ metadata: { tick: i } });
      await sleep(Math.max(0, start + (i + 1) * intervalMs - performance.now()));
    }
    await until(() => tap.events.length - from >= count, 5000, `${count} updates`);
    const arrivals = tap.events.slice(from).filter((e) => e.session === id).map((e) => e.at);
    const gaps = arrivals.slice(1).map((at, i) => at - arrivals[i]);
    const mean = gaps.reduce((a, b) => a + b, 0) / Math.max(1, gaps.length);
    const jitter = Math.sqrt(gaps.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, gaps.length));
    const ratio = intervalMs / mean;
    check.figures = { sent_per_s: 1000 / intervalMs, received_per_s: round(1000 / mean), jitter_ms: round(jitter) };
    check.threshold = { rate_min_ratio: this.thresholds.rate_min_ratio, jitter_ms: this.thresholds.jitter_ms };
    check.ok = ratio >= this.thresholds.rate_min_ratio && jitter <= this.thresholds.jitter_ms;
  }

  /** Several clients send at once: every observer agrees on one gap-free order. @param {any} check */
  async races(check) {
    const id = /** @type {string} */ (this.sessionId);
    const taps = [new Tap(), new Tap()];
    const observers = await Promise.all(taps.map(async (tap) => (await this.client(tap)).join(id)));
    const senders = await Promise.all([0, 1, 2].map(async () => (await this.client()).join(id)));
    const from = taps.map((tap) => tap.events.length);
    const handles = senders.flatMap((s, n) => [0, 1, 2, 3, 4].map((i) => s.sendMessage(`race ${n}.${i}`)));
    await Promise.all(handles.map((h) => h.confirmed));
    const last = Math.max(...handles.map((h) => /** @type {number} */ (h.seq)));
    await until(() => observers.every((o) => o.getSnapshot().seq >= last), 5000, "every observer to catch up");
    await sleep(100);
    const orders = taps.map((tap, i) => tap.events.slice(from[i]).filter((e) => e.session === id && e.kind === "message.created").map((e) => e.seq));
    const problems = taps.flatMap((tap, i) => wireProblems(tap.events.slice(from[i]).filter((e) => e.session === id).map((e) => e.seq)));
    const agree = orders.every((order) => JSON.stringify(order) === JSON.stringify(orders[0]));
    check.figures = { senders: 3, messages: handles.length, observers: taps.length, agree, problems: problems.slice(0, 5) };
    check.ok = agree && problems.length === 0 && orders[0].length >= handles.length;
  }

  /** Clients opened and closed leave no socket, listener or timer behind. @param {any} check */
  async leaks(check) {
    const id = /** @type {string} */ (this.sessionId);
    const made = [];
    for (let i = 0; i < 8; i += 1) {
      const client = await this.client();
      const session = await client.join(id);
      session.subscribe(() => {});
      made.push({ client, session, ws: client.link?.ws });
    }
    for (const { client } of made) await client.close();
    await sleep(200);
    const leftovers = made.filter(
      ({ client, session, ws }) => client.timers.size > 0 || session.listeners.size > 0 || (ws && ws.readyState !== WebSocket.CLOSED) || client.sessions.size > 0,
    );
    this.open = this.open.filter((c) => !made.some((m) => m.client === c));
    check.figures = { opened: made.length, leftovers: leftovers.length };
    check.ok = leftovers.length === 0;
  }

  /** A forced disconnect mid-reply resumes with nothing lost or doubled. @param {any} check */
  async recovery(check) {
    const id = /** @type {string} */ (this.replySessionId);
    const tap = new Tap();
    const client = await this.client(tap);
    const session = await client.join(id);
    const text = "recovery check with enough words to stream across a forced disconnect of the socket";
    const start = performance.now();
    const handle = session.sendMessage(text);
    await handle.confirmed;
    const replyOf = () => session.getSnapshot().messages.find((m) => m.role === "assistant" && (m.seq ?? 0) > (handle.seq ?? 0));
    await until(() => tap.streams.length > 0, 5000, "the reply to start streaming");
    const cutAt = replyOf()?.content.length ?? 0;
    client.link?.ws.close(4000, "forced by the recovery check");
    await until(() => (replyOf()?.status ?? "streaming") !== "streaming", this.thresholds.recovery_ms, "the reply to end after the reconnect");
    const reply = replyOf();
    const snapshot = session.getSnapshot();
    const ids = snapshot.messages.map((m) => m.id);
    check.figures = {
      recovered_ms: round(performance.now() - start),
      cut_after_chars: cutAt,
      reply_ok: reply?.content === `echo: ${text}` && reply?.status === "complete",
      copies_of_message: snapshot.messages.filter((m) => m.content === text).length,
      duplicate_ids: ids.length - new Set(ids).size,
    };
    check.threshold = { recovery_ms: this.thresholds.recovery_ms };
    check.ok = check.figures.reply_ok && check.figures.copies_of_message === 1 && check.figures.duplicate_ids === 0;
  }

  /** Long-lived connections stay up and answer heartbeats on time. @param {any} check */
  async stability(check) {
    const clients = await Promise.all([0, 1].map(() => this.client()));
    const states = clients.map(() => /** @type {string[]} */ ([]));
    clients.forEach((c, i) => c.on("state", (/** @type {string} */ s) => states[i].push(s)));
    const rtts = [];
    const until_ = performance.now() + 3000;
    while (performance.now() < until_) {
      for (const client of clients) rtts.push(await client.ping());
      await sleep(200);
    }
    const unexpected = states.flat().length;
    check.figures = { pings: rtts.length, worst_rtt_ms: round(Math.max(...rtts)), unexpected_state_changes: unexpected };
    check.threshold = { heartbeat_ms: this.thresholds.heartbeat_ms };
    check.ok = unexpected === 0 && Math.max(...rtts) <= this.thresholds.heartbeat_ms;
  }

  /** One sender's messages arrive at another client in order, gap-free. @param {any} check */
  async ordering(check) {
    const id = /** @type {string} */ (this.sessionId);
    const tap = new Tap();
    const receiver = await this.client(tap);
    const seen = await receiver.join(id);
    const sender = await (await this.client()).join(id);
    const from = tap.events.length;
    const handles = [];
    for (let i = 0; i < this.messageCount; i += 1) handles.push(sender.send("card.add", { title: `order ${i}`, content: String(i) }));
    await Promise.all(handles.map((h) => h.confirmed));
    const last = /** @type {number} */ (handles[handles.length - 1].seq);
    await until(() => seen.getSnapshot().seq >= last, 5000, "the receiver to catch up");
    await sleep(100);
    const received = tap.events.slice(from).filter((e) => e.session === id);
    const titles = received.filter((e) => e.kind === "card.added").map((e) => e.data.card.title);
    const expected = handles.map((_, i) => `order ${i}`);
    const problems = wireProblems(received.map((e) => e.seq));
    check.figures = { sent: handles.length, received: titles.length, problems: problems.slice(0, 5) };
    check.ok = JSON.stringify(titles) === JSON.stringify(expected) && problems.length === 0;
  }

  /** Ramp to N connections; a broadcast reaches all of them within the threshold. @param {any} check */
  async concurrency(check) {
    const id = /** @type {string} */ (this.sessionId);
    const taps = Array.from({ length: this.clientCount * 2 }, () => new Tap());
    const sessions = await Promise.all(taps.map(async (tap) => (await this.client(tap)).join(id)));
    const from = taps.map((tap) => tap.events.length);
    const sent = performance.now();
    const handle = sessions[0].send("card.add", { title: "broadcast", content: "all" });
    await handle.confirmed;
    await until(() => taps.every((tap, i) => tap.events.slice(from[i]).some((e) => e.seq === handle.seq)), 5000, "every client to get the broadcast");
    const delays = taps.map((tap, i) => /** @type {any} */ (tap.events.slice(from[i]).find((e) => e.seq === handle.seq)).at - sent);
    check.figures = { connections: taps.length, delivery_p50_ms: round(quantile(delays, 0.5)), delivery_p95_ms: round(quantile(delays, 0.95)) };
    check.threshold = { delivery_p95_ms: this.thresholds.delivery_p95_ms };
    check.ok = check.figures.delivery_p95_ms <= this.thresholds.delivery_p95_ms;
  }
}

/** Run every check; resolves to the JSON report. @param {ConstructorParameters<typeof ProductionRealTimeTester>[0]} options */
export function runRealTimeTests(options) {
  return new ProductionRealTimeTester(options).run();
}

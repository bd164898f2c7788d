// Unit tests of the browser client's pure parts: the state table, backoff, session
// change notifications and send handles. The I/O paths run against a real server in
// Chromium (tests/browser/).
import { test } from "node:test";
import assert from "node:assert/strict";

import { STATES, TRANSITIONS, backoffDelay, next } from "../lib/machine.js";
import { Session } from "../lib/session.js";
import { tokenClaims, urlsOf } from "../lib/client.js";

test("every transition of the table leads to a known state", () => {
  for (const [input, row] of Object.entries(TRANSITIONS)) {
    for (const [from, to] of Object.entries(row)) {
      assert.ok(STATES.includes(from), `${input}: ${from}`);
      assert.ok(STATES.includes(to), `${input}: ${to}`);
    }
  }
});

test("closed is final: no input leaves it", () => {
  for (const input of Object.keys(TRANSITIONS)) assert.equal(next("closed", input), "closed");
});

test("a lost link reconnects, and an opened one is connected from every live state", () => {
  assert.equal(next("connected", "lost"), "reconnecting");
  for (const from of ["connecting", "reconnecting", "fallback", "offline"]) assert.equal(next(from, "opened"), "connected");
  assert.equal(next("offline", "online"), "reconnecting");
  assert.equal(next("reconnecting", "fallback"), "fallback");
});

test("an unknown input is an error, not a silent no-op", () => {
  assert.throws(() => next("connected", "nonsense"));
});

test("backoff is full jitter under an exponential ceiling with a cap", () => {
  assert.equal(backoffDelay(0, { random: () => 1 }), 500);
  assert.equal(backoffDelay(3, { random: () => 1 }), 4000);
  assert.equal(backoffDelay(40, { random: () => 1 }), 30000);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
});

test("urls: an http origin gives the ws endpoint and the http base", () => {
  assert.deepEqual(urlsOf("http://127.0.0.1:8765"), ["ws://127.0.0.1:8765/v1/ws", "http://127.0.0.1:8765"]);
  assert.deepEqual(urlsOf("https://chat.example/"), ["wss://chat.example/v1/ws", "https://chat.example"]);
});

test("token claims are read from the payload", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "alice", exp: 99 })).toString("base64url");
  assert.deepEqual(tokenClaims(`x.${payload}.y`), { sub: "alice", exp: 99 });
  assert.deepEqual(tokenClaims("garbage"), {});
});

function host(overrides = {}) {
  const sent = [];
  return {
    sent,
    debounceMs: 20,
    transmit: (session, clientId) => sent.push(clientId),
    signal() {},
    cancel: async () => {},
    fetchEvents() {},
    fetchMessage() {},
    leave() {},
    persist() {},
    checkQueue() {},
    ...overrides,
  };
}

const snapshot = { title: "t", members: [{ user: "alice", role: "owner" }], messages: [] };

test("changes are debounced into one notification that names every distinct message", async () => {
  const session = new Session(host(), "s_1", "alice");
  session.subscribed(1, snapshot);
  const calls = [];
  session.subscribe((changes) => calls.push(changes));
  await new Promise((r) => setTimeout(r, 40));
  calls.length = 0;
  const a = session.sendMessage("one");
  const b = session.sendMessage("two");
  const c = session.sendMessage("three");
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(calls.length, 1);
  const keys = calls[0].filter(([what]) => what === "message").map(([, key]) => key);
  assert.deepEqual(keys, [a.key, b.key, c.key]);
  assert.deepEqual(session.state.messages.map((m) => m.status), ["pending", "pending", "pending"]);
});

test("getSnapshot is the same object until something changes", () => {
  const session = new Session(host(), "s_1", "alice");
  session.subscribed(1, snapshot);
  const first = session.getSnapshot();
  assert.equal(session.getSnapshot(), first);
  session.sendMessage("hi");
  assert.notEqual(session.getSnapshot(), first);
  assert.ok(Object.isFrozen(session.getSnapshot().messages));
});

test("a handle's confirmed promise settles on the ack once the replica reaches it", async () => {
  const h = host();
  const session = new Session(h, "s_1", "alice");
  session.subscribed(1, snapshot);
  const handle = session.sendMessage("hi");
  assert.deepEqual(h.sent, [handle.clientId]);
  session.event({
    type: "event", session: "s_1", seq: 2, kind: "message.created", ts: 1, author: "alice",
    client_id: handle.clientId,
    data: { message: { id: "m_2", role: "user", author: "alice", content: "hi", status: "complete" } },
  });
  session.ack(handle.clientId, 2, "m_2");
  const confirmed = await handle.confirmed;
  assert.equal(confirmed.seq, 2);
  assert.equal(session.state.messages[0].key, handle.key);
  assert.equal(session.state.messages[0].status, "complete");
});

test("a refused send rejects its handle and stays in the state as failed", async () => {
  const session = new Session(host(), "s_1", "alice");
  session.subscribed(1, snapshot);
  const handle = session.sendMessage("hi");
  session.refused(handle.clientId, "forbidden", "viewers may not send");
  await assert.rejects(handle.confirmed, (error) => error.code === "forbidden");
  assert.equal(session.state.messages[0].status, "failed");
});

test("a gap asks the host for the missing events", () => {
  const asked = [];
  const session = new Session(host({ fetchEvents: (s, after, last) => asked.push([after, last]) }), "s_1", "alice");
  session.subscribed(1, snapshot);
  session.event({ type: "event", session: "s_1", seq: 4, kind: "agent.status", ts: 1, author: "echo", data: { status: "idle" } });
  assert.deepEqual(asked, [[1, 3]]);
});

// The browser replica runs every shared conformance vector (tests/vectors/*.json), as the
// Python replica does in tests/client/test_vectors.py: both must reach each expected state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Replica } from "../lib/replica.js";

const here = dirname(fileURLToPath(import.meta.url));
const VECTORS = join(here, "..", "..", "..", "..", "tests", "vectors");
const files = readdirSync(VECTORS).filter((name) => name.endsWith(".json")).sort();

// The vectors name fields as the wire and the Python SDK do; the JS state is camelCase.
const CAMEL = { client_id: "clientId", is_code: "isCode", event_id: "eventId" };
const pick = (object, wanted) =>
  Object.fromEntries(Object.keys(wanted).map((name) => [name, object[CAMEL[name] ?? name]]));

class Runner {
  constructor(vector) {
    this.replica = new Replica(vector.session, { user: vector.user });
    this.resolved = [];
  }

  apply(step) {
    const [[op, arg]] = Object.entries(step);
    const r = this.replica;
    if (op === "snapshot") r.loadSnapshot(arg.seq, arg.snapshot);
    else if (op === "event") r.receiveEvent(arg);
    else if (op === "stream") r.receiveStream(arg.message_id, arg.offset, arg.text);
    else if (op === "message") r.receiveMessage(arg);
    else if (op === "send") r.addSend(arg.client_id, arg.kind, arg.data);
    else if (op === "ack") r.receiveAck(arg.client_id, arg.seq, arg.event_id);
    else if (op === "send_failed") r.sendFailed(arg.client_id, arg.error, arg.code ?? null);
    else throw new Error(`unknown step ${op}`);
    this.resolved.push(...r.takeResolved());
  }

  check(expect, where) {
    const r = this.replica;
    const s = r.state;
    const actual = {
      seq: s.seq,
      gap: r.gap,
      title: s.title,
      status: s.status,
      version: s.version,
      metadata: s.metadata,
      agent: s.agent,
      members: s.members,
      cards: [...s.cards.keys()],
      unacked: r.unacked(),
      refetches: r.takeRefetches().sort(),
    };
    for (const [name, wanted] of Object.entries(expect)) {
      if (name === "messages") {
        assert.equal(r.messages.length, wanted.length, `${where}: message count`);
        assert.deepEqual(r.messages.map((m, i) => pick(m, wanted[i])), wanted, where);
      } else if (name === "stats") {
        assert.deepEqual(pick(s.stats, wanted), wanted, `${where}: stats`);
      } else if (name === "resolved") {
        assert.equal(this.resolved.length, wanted.length, `${where}: resolved count`);
        assert.deepEqual(this.resolved.map((x, i) => pick(x, wanted[i])), wanted, where);
      } else {
        assert.deepEqual(actual[name], wanted, `${where}: ${name}`);
      }
    }
  }
}

test("there are vectors to run", () => {
  assert.ok(files.length >= 15, `only ${files.length} vectors in ${VECTORS}`);
});

for (const file of files) {
  test(`the browser replica reaches the expected state of ${file}`, () => {
    const vector = JSON.parse(readFileSync(join(VECTORS, file), "utf8"));
    const runner = new Runner(vector);
    vector.steps.forEach((step, index) => {
      if ("expect" in step) runner.check(step.expect, `${vector.name}: checkpoint at step ${index}`);
      else runner.apply(step);
    });
    runner.check(vector.expect, `${vector.name}: end`);
  });
}

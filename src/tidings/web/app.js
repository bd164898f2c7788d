// The chat UI served at `/`: plain DOM over tidings.js. User content is only ever set as
// text (textContent), never parsed as HTML.

import { connect, tokenClaims } from "./tidings.js";
import { ProductionRealTimeTester, runRealTimeTests } from "./realtime-tests.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const TOKEN_KEY = "tidings:token";

/** @type {import("./lib/client.js").Client | null} */
let client = null;
/** @type {import("./lib/session.js").Session | null} */
let session = null;
/** @type {(() => void)[]} */
let unlisten = [];
/** @type {Map<string, number>} who is typing → when it expires */
const typing = new Map();

/** @param {string} tag @param {Record<string, string>} [attrs] @param {string} [text] */
function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function setBadge(/** @type {string} */ state) {
  const badge = $("badge");
  badge.dataset.state = state;
  badge.textContent = state;
  document.body.dataset.connection = state;
  // The transitions, for whoever wants to know what the badge showed (tests do).
  const seen = /** @type {any} */ (window).tidingsBadgeHistory ?? [];
  seen.push(state);
  /** @type {any} */ (window).tidingsBadgeHistory = seen;
}

// ------------------------------------------------------------ signing in

async function devMode() {
  try {
    const response = await fetch("/v1/dev");
    return response.ok && (await response.json()).dev === true;
  } catch {
    return false;
  }
}

async function signIn(/** @type {string} */ token) {
  $("sign-in-error").textContent = "";
  try {
    client = await connect(location.origin, { token });
  } catch (error) {
    $("sign-in-error").textContent = `Could not connect: ${/** @type {Error} */ (error).message}`;
    if (/** @type {any} */ (error).code === "unauthorized") sessionStorage.removeItem(TOKEN_KEY);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  /** @type {any} */ (window).tidingsClient = client;
  setBadge(client.state);
  client.on("state", (/** @type {string} */ state) => setBadge(state));
  $("who").textContent = String(tokenClaims(token).sub ?? "");
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  window.addEventListener("online", () => refreshSessions());
  const wanted = location.hash.slice(1);
  if (wanted) await openSession(wanted);
  await refreshSessions();
}

// ------------------------------------------------------------ sessions

async function refreshSessions() {
  if (!client) return;
  const list = $("session-list");
  let sessions = [];
  try {
    sessions = (await client.listSessions()).sessions ?? [];
  } catch {
    return;
  }
  list.replaceChildren(
    ...sessions.map((/** @type {any} */ info) => {
      const item = el("li");
      const button = el("button", { type: "button", "data-session": info.id }, info.title || info.id);
      if (session && session.id === info.id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => openSession(info.id));
      item.append(button);
      return item;
    }),
  );
}

async function openSession(/** @type {string} */ id) {
  if (!client) return;
  if (session) {
    for (const off of unlisten) off();
    session.leave();
  }
  // The session at once (while offline too: queued sends show); its state fills in.
  session = client.session(id);
  /** @type {any} */ (window).tidingsSession = session;
  location.hash = id;
  $("chat").hidden = false;
  $("side").hidden = false;
  unlisten = [
    session.subscribe(() => render()),
    session.onSignal((signal) => {
      if (signal.name !== "typing") return;
      if (signal.data?.typing) typing.set(signal.from, Date.now() + 4000);
      else typing.delete(signal.from);
      renderTyping();
    }),
  ];
  render();
  await refreshSessions();
  $("message-input").focus();
}

// ------------------------------------------------------------ rendering

function render() {
  if (!session) return;
  const state = session.getSnapshot();
  $("chat-title").textContent = state.title || state.session;
  const agent = /** @type {any} */ (state.agent);
  $("agent-status").textContent = agent?.status && agent.status !== "idle" ? `assistant: ${agent.status}` : "";
  const streaming = state.messages.find((m) => m.status === "streaming");
  $("cancel-reply").hidden = !streaming;
  $("cancel-reply").dataset.message = streaming?.id ?? "";
  renderMessages(state.messages);
  const online = new Set(state.presence);
  $("members").replaceChildren(
    ...Object.entries(state.members).map(([user, role]) =>
      el("li", { "data-online": String(online.has(user)), "data-user": user }, `${user} (${role})${online.has(user) ? " · online" : ""}`),
    ),
  );
  const stats = /** @type {any} */ (state.stats);
  $("stats").replaceChildren(
    ...[
      ["messages", stats.messages],
      ["participants", stats.participants],
      ["cards", stats.cards],
      ["tokens", `${stats.tokens.prompt} in / ${stats.tokens.completion} out`],
    ].flatMap(([name, value]) => [el("dt", {}, String(name)), el("dd", { "data-stat": String(name) }, String(value))]),
  );
  $("cards").replaceChildren(
    ...state.cards.map((/** @type {any} */ card) => {
      const item = el("li", { "data-card": card.id });
      item.append(el("strong", {}, card.title), el("span", {}, ` ${card.content}`));
      const remove = el("button", { type: "button", class: "link", "aria-label": `Remove card ${card.title}` }, "remove");
      remove.addEventListener("click", () => session?.removeCard(card.id));
      item.append(remove);
      return item;
    }),
  );
  if (state.ended) $("typing").textContent = `You left this session: ${state.ended}`;
}

/** @param {readonly any[]} messages */
function renderMessages(messages) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  /** @type {Map<string, HTMLElement>} */
  const existing = new Map();
  for (const node of /** @type {HTMLElement[]} */ ([...list.children])) existing.set(node.dataset.key ?? "", node);
  const nodes = messages.map((m) => {
    const node = existing.get(m.key) ?? el("li", { class: "message", "data-key": m.key });
    node.dataset.role = m.role;
    node.dataset.status = m.status;
    node.dataset.id = m.id ?? "";
    const meta = el("div", { class: "meta" }, `${m.author}${m.role === "assistant" ? " (assistant)" : ""}`);
    const body = m.isCode ? el("pre") : el("div", { class: "content" });
    if (m.isCode) body.append(el("code", { class: "content" }, m.content));
    else body.textContent = m.content;
    const parts = [meta, body];
    if (m.status === "failed") {
      parts.push(el("div", { class: "error" }, m.error ?? "failed"));
      if (m.id === null) {
        const retry = el("button", { type: "button", class: "link" }, "retry");
        retry.addEventListener("click", () => session?.retry(m.key));
        parts.push(retry);
      }
    }
    node.replaceChildren(...parts);
    return node;
  });
  list.replaceChildren(...nodes);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderTyping() {
  const now = Date.now();
  for (const [who, until] of typing) if (until < now) typing.delete(who);
  const names = [...typing.keys()];
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}
setInterval(renderTyping, 1000);

// ------------------------------------------------------------ wiring

let typingSent = 0;

function wire() {
  $("dev-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = /** @type {HTMLInputElement} */ ($("dev-name")).value.trim();
    const response = await fetch("/v1/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const body = await response.json();
    if (!response.ok) {
      $("sign-in-error").textContent = body?.error?.message ?? "sign-in failed";
      return;
    }
    await signIn(body.token);
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn(/** @type {HTMLTextAreaElement} */ ($("token-input")).value.trim());
  });
  $("sign-out").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    await client?.close();
    location.hash = "";
    location.reload();
  });
  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!client) return;
    const title = /** @type {HTMLInputElement} */ ($("create-title")).value.trim();
    const agent = /** @type {HTMLSelectElement} */ ($("create-agent")).value;
    const info = await client.createSession(title, { agent });
    /** @type {HTMLInputElement} */ ($("create-title")).value = "";
    await openSession(info.id);
  });
  const input = /** @type {HTMLTextAreaElement} */ ($("message-input"));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      /** @type {HTMLFormElement} */ ($("composer")).requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    if (session && Date.now() - typingSent > 2000) {
      typingSent = Date.now();
      session.typing(true);
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const content = input.value;
    if (!session || !content.trim()) return;
    const isCode = /** @type {HTMLInputElement} */ ($("is-code")).checked;
    session.sendMessage(content, { isCode });
    session.typing(false);
    typingSent = 0;
    input.value = "";
  });
  $("cancel-reply").addEventListener("click", () => {
    const id = $("cancel-reply").dataset.message;
    if (session && id) session.cancel(id).catch(() => {});
  });
  $("card-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const title = /** @type {HTMLInputElement} */ ($("card-title"));
    const content = /** @type {HTMLTextAreaElement} */ ($("card-content"));
    session?.addCard(title.value, content.value);
    title.value = "";
    content.value = "";
  });
}

async function main() {
  wire();
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
  /** @type {any} */ (window).runRealTimeTests = (/** @type {any} */ options) =>
    runRealTimeTests({ url: location.origin, token: sessionStorage.getItem(TOKEN_KEY), ...options });
  /** @type {any} */ (window).ProductionRealTimeTester = ProductionRealTimeTester;
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    await signIn(saved);
  } else {
    setBadge("signed out");
  }
  $("dev-form").hidden = !(await devMode());
  document.body.dataset.ready = "true";
}

main();

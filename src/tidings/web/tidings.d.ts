// Types of tidings.js, the browser client of Tidings (protocol v1).

export const VERSION: string;

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "fallback" | "offline" | "closed";
export type MessageStatus = "pending" | "complete" | "streaming" | "failed";

export interface ConnectOptions {
  /** A JWT; or give `tokenProvider`, called at each (re)connect and before expiry. */
  token?: string;
  tokenProvider?: () => Promise<string> | string;
  /** HTTP base when it differs from the WebSocket's origin. */
  httpUrl?: string;
  reconnectBaseMs?: number; // 500
  reconnectCapMs?: number; // 30000
  /** Failed WebSocket attempts in a row before the HTTP fallback (POST + SSE) starts. */
  fallbackAfter?: number; // 3
  /** `connect()` rejects when neither the WebSocket nor the fallback works by then. */
  connectTimeoutMs?: number; // 10000
  joinTimeoutMs?: number; // 15000
  /** Null: the server's `heartbeat_ms`. */
  heartbeatMs?: number | null;
  /** Change notifications are delivered at most once per this many ms. */
  debounceMs?: number; // 50
  /** Sends waiting (offline or in flight) at most. */
  maxQueue?: number; // 1000
  refreshMarginMs?: number; // 30000
  clientName?: string;
  /** Where the offline queue is kept; null: memory only. Default sessionStorage. */
  storage?: Storage | null;
  /** Every frame as it arrives on the socket, before the replica (for probes and tests). */
  onFrame?: (frame: Record<string, unknown>) => void;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
  EventSource?: typeof EventSource;
}

export interface ChatMessage {
  /** Stable for the message's whole life: the client id of a local send, else `id`. */
  readonly key: string;
  readonly id: string | null;
  readonly seq: number | null;
  readonly author: string;
  readonly role: "user" | "assistant" | "system" | string;
  readonly content: string;
  readonly isCode: boolean;
  readonly status: MessageStatus;
  readonly clientId: string | null;
  readonly createdAt: number | null;
  readonly error: string | null;
  readonly usage: Record<string, number> | null;
}

export interface Card {
  id: string;
  title: string;
  content: string;
  source: string;
  tokens: number;
}

export interface SessionState {
  readonly session: string;
  /** True once the replica holds the server's state. */
  readonly loaded: boolean;
  readonly seq: number;
  readonly title: string;
  readonly status: string;
  readonly version: number;
  readonly metadata: Record<string, unknown>;
  readonly members: Readonly<Record<string, string>>;
  readonly presence: readonly string[];
  readonly cards: readonly Card[];
  readonly agent: { status: string; task?: string; progress?: number; error?: string };
  readonly stats: {
    messages: number;
    participants: number;
    cards: number;
    tokens: { prompt: number; completion: number };
  };
  readonly messages: readonly ChatMessage[];
  /** Why the server ended this subscription (removed from the session), or null. */
  readonly ended: string | null;
}

/** [field, key]: e.g. ["message", key], ["card", id], ["title", null]. */
export type Change = [string, string | null];

export class SendFailed extends Error {
  readonly code: string;
  readonly version: number | null;
}

export class TidingsError extends Error {
  readonly code: string;
}

export class SendHandle {
  readonly clientId: string;
  readonly key: string;
  readonly kind: string;
  readonly status: "pending" | "confirmed" | "failed";
  readonly seq: number | null;
  readonly eventId: string | null;
  readonly error: SendFailed | null;
  /** Settles on the ack: resolves with this handle, rejects with SendFailed. */
  readonly confirmed: Promise<SendHandle>;
}

export class Session {
  readonly id: string;
  readonly state: SessionState;
  /** The store interface: stable between changes (React's useSyncExternalStore). */
  getSnapshot(): SessionState;
  subscribe(listener: (changes: Change[]) => void): () => void;
  sendMessage(content: string, options?: { isCode?: boolean; clientId?: string }): SendHandle;
  addCard(title: string, content: string, options?: { source?: string }): SendHandle;
  removeCard(cardId: string): SendHandle;
  update(changes: { title?: string; status?: string; metadata?: Record<string, unknown> }, options?: { baseVersion?: number }): SendHandle;
  /** Send a failed local message again (a new send). */
  retry(key: string): SendHandle | null;
  signal(name: string, data?: Record<string, unknown>): void;
  typing(typing: boolean): void;
  onSignal(listener: (signal: { name: string; from: string; data: any }) => void): () => void;
  cancel(messageId: string): Promise<void>;
  leave(): void;
}

export class Client {
  readonly state: ConnectionState;
  readonly user: string | null;
  constructor(url: string, options: ConnectOptions);
  start(): Promise<Client>;
  /** Resolves once the session's state is loaded. */
  join(sessionId: string): Promise<Session>;
  /** The session object at once; its state fills in when subscribed. */
  session(sessionId: string): Session;
  on(name: "state", fn: (state: ConnectionState, previous: ConnectionState) => void): () => void;
  on(name: "error", fn: (error: Error) => void): () => void;
  ping(): Promise<number>;
  createSession(title: string, options?: { agent?: string }): Promise<{ id: string; title: string; agent: string; owner: string }>;
  listSessions(): Promise<{ sessions: Array<{ id: string; title: string }> }>;
  addMember(sessionId: string, user: string, role?: string): Promise<unknown>;
  removeMember(sessionId: string, user: string): Promise<unknown>;
  close(): Promise<void>;
}

export function connect(url: string, options: ConnectOptions): Promise<Client>;
export function tokenClaims(token: string): Record<string, unknown>;
export function newClientId(): string;

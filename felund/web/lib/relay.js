// A signed client of the felund relay API (spec: "Relay / rendezvous HTTP API").
//
// Every call but /v1/health, the WebSocket feed included, is signed with the circle's
// signing key (HMAC(secret, "api-v1")): X-Felund-Node, -Ts, -Nonce and
// -Signature headers, or ts/nonce/signature query parameters on the feed,
// since browsers cannot set headers on a WebSocket. The signed path is the
// part after /v1, without the query. Answers are read with pyjson so that a
// message keeps Python's int/float distinction until wire.js checks it.

import { hexToBytes, randomHex } from "./bytes.js";
import { apiSignature, apiSigningKey, hmacHex, sha256Hex } from "./crypto.js";
import { circleHint as hintOf, circleId as circleIdOf } from "./ids.js";
import { isObject, loads } from "./pyjson.js";

export const MAX_BATCH = 50; // messages per POST /v1/messages
export const DEFAULT_PAGE = 200;
const MIN_TTL_S = 30; // the relay's shortest registration
const TIMEOUT_MS = 15000;

/**
 * The relay's name for a signing key (a realm): 32 hex of its SHA-256 (felund.relay.auth.key_id).
 * @param {string} signingKeyHex
 * @returns {Promise<string>}
 */
export async function realmKeyId(signingKeyHex) {
  return (await sha256Hex(hexToBytes(signingKeyHex))).slice(0, 32);
}

/**
 * What a registration under a new epoch's key carries so that the relay lets
 * the new realm share the old one's room (SPEC-16 §4): the old realm's key id
 * and HMAC(old signing key, "felund-succession-v1|" + new key id).
 * @param {string} oldSecretHex the epoch before's secret
 * @param {string} newSigningKeyHex
 * @returns {Promise<{key_id: string, proof: string}>}
 */
export async function succession(oldSecretHex, newSigningKeyHex) {
  const oldKey = await apiSigningKey(oldSecretHex);
  const proof = await hmacHex(hexToBytes(oldKey), `felund-succession-v1|${await realmKeyId(newSigningKeyHex)}`);
  return { key_id: await realmKeyId(oldKey), proof };
}

/** The relay answered with an error (HTTP status >= 400, or an answer that is not ok). */
export class RelayError extends Error {
  /**
   * @param {number} status HTTP status
   * @param {string} code the relay's error code ("" if it gave none)
   * @param {string} message
   * @param {number} [retryAfter] seconds, from Retry-After
   */
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.name = "RelayError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The relay could not be reached (network failure, connection refused, timeout). */
export class RelayDown extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "RelayDown";
  }
}

/**
 * The base URL of a relay without a trailing slash: "" means the page's own
 * origin; "//host" takes the page's scheme; a bare "host:port" gets http:// for
 * loopback hosts and https:// otherwise. Query and fragment are dropped.
 * @param {string} url
 * @returns {string}
 * @throws {TypeError} when it is not an http(s) URL
 */
export function normalizeRelayUrl(url) {
  let s = String(url ?? "").trim();
  const origin = globalThis.location?.origin;
  if (s === "") {
    if (!origin || origin === "null") throw new TypeError("no relay URL");
    return origin;
  }
  if (s.startsWith("//")) {
    const scheme = globalThis.location?.protocol === "http:" ? "http:" : "https:";
    s = scheme + s;
  } else if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(s)) {
    const host = s.split(/[/:]/)[0].toLowerCase();
    const local = host === "localhost" || host.startsWith("127.") || s.startsWith("[::1]");
    s = (local ? "http://" : "https://") + s;
  }
  let parsed;
  try {
    parsed = new URL(s);
  } catch {
    throw new TypeError(`not a relay URL: ${url}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError("a relay URL starts with http:// or https://");
  }
  if (parsed.username || parsed.password) throw new TypeError("a relay URL carries no password");
  const path = parsed.pathname.replace(/\/+$/, "");
  return `${parsed.origin}${path}`;
}

const PROBE_TIMEOUT_MS = 4000;

/**
 * A relay's answer body: its JSON object (null for anything else) and its error code ("" if none).
 * @param {string} text
 * @returns {{answer: Object | null, code: string}}
 */
function readAnswer(text) {
  let answer = null;
  try {
    answer = loads(text);
  } catch {
    answer = null;
  }
  if (!isObject(answer)) return { answer: null, code: "" };
  return { answer, code: typeof answer.code === "string" ? answer.code.slice(0, 40) : "" };
}

/**
 * Whether a relay answers: the unsigned GET /v1/health (the spec signs no
 * health check: it names no circle, so any page may ask before it has one).
 * @param {string} baseUrl a relay URL (normalizeRelayUrl's forms)
 * @param {{timeoutMs?: number}} [options]
 * @returns {Promise<{ok: true, version: string, time: number}>} time: the relay's clock, Unix s
 * @throws {RelayDown} no answer (network failure, refused, timeout)
 * @throws {RelayError} an answer that is not a relay's health (e.g. 404 from a static host)
 * @throws {TypeError} when baseUrl is not a relay URL
 */
export async function probeRelay(baseUrl, { timeoutMs = PROBE_TIMEOUT_MS } = {}) {
  const base = normalizeRelayUrl(baseUrl);
  let response;
  let text;
  try {
    response = await fetch(`${base}/v1/health`, {
      cache: "no-store",
      credentials: "omit",
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await response.text();
  } catch (e) {
    throw new RelayDown(e?.name === "TimeoutError" ? "the relay did not answer in time" : "the relay cannot be reached");
  }
  const { answer, code } = readAnswer(text);
  if (response.status !== 200 || answer === null || answer.ok !== true) {
    // 502 for a 200 that is no health answer: something else lives at that address.
    const status = response.status === 200 ? 502 : response.status;
    throw new RelayError(status, code, `no felund relay answers at ${base} (HTTP ${response.status})`);
  }
  return {
    ok: true,
    version: typeof answer.version === "string" ? answer.version : "",
    time: typeof answer.time === "number" ? answer.time : 0,
  };
}

/** Signed calls to one relay, for one circle, as one node. */
export class RelayClient {
  /**
   * @param {{baseUrl: string, secretHex: string, circleId?: string, circleHint?: string,
   *   nodeId: string, timeoutMs?: number, succeeds?: string}} options circleId and circleHint
   *   are derived when absent; succeeds: the secret of the epoch before secretHex's, whose
   *   realm this one's registrations succeed
   */
  constructor({ baseUrl, secretHex, circleId, circleHint, nodeId, timeoutMs = TIMEOUT_MS, succeeds = "" }) {
    this.base = normalizeRelayUrl(baseUrl);
    this.secretHex = secretHex;
    this.succeeds = succeeds;
    this.nodeId = nodeId;
    this.timeoutMs = timeoutMs;
    this._circleId = circleId ?? null;
    this._hint = circleHint ?? null;
    this._key = null;
    /** Seconds to add to this clock to get the relay's (learned on EXPIRED_TIMESTAMP). */
    this.skew = 0;
  }

  /** @returns {Promise<string>} the circle's relay hint */
  async circleHint() {
    if (this._hint === null) {
      if (this._circleId === null) this._circleId = await circleIdOf(this.secretHex);
      this._hint = await hintOf(this._circleId);
    }
    return this._hint;
  }

  async _signingKey() {
    if (this._key === null) this._key = await apiSigningKey(this.secretHex);
    return this._key;
  }

  _now() {
    return Math.floor(Date.now() / 1000) + this.skew;
  }

  async _signature(method, path, bodyText) {
    const ts = this._now();
    const nonce = randomHex(16);
    const signature = await apiSignature(await this._signingKey(), method, path, bodyText, ts, nonce);
    return { ts, nonce, signature };
  }

  async _signedHeaders(method, path, bodyText, hasBody) {
    const sig = await this._signature(method, path, bodyText);
    const headers = {
      "X-Felund-Node": this.nodeId,
      "X-Felund-Ts": String(sig.ts),
      "X-Felund-Nonce": sig.nonce,
      "X-Felund-Signature": sig.signature,
    };
    if (hasBody) headers["Content-Type"] = "application/json";
    return headers;
  }

  async _call(method, path, { query, body, keepalive = false, retried = false } = {}) {
    const bodyText = body === undefined ? "" : JSON.stringify(body);
    const headers = await this._signedHeaders(method, path, bodyText, body !== undefined);
    const qs = query ? "?" + new URLSearchParams(query).toString() : "";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.timeoutMs);
    let response;
    let text;
    try {
      response = await fetch(`${this.base}/v1${path}${qs}`, {
        method,
        headers,
        body: body === undefined ? undefined : bodyText,
        cache: "no-store",
        credentials: "omit",
        keepalive,
        signal: abort.signal,
      });
      text = await response.text();
    } catch (e) {
      throw new RelayDown(abort.signal.aborted ? "the relay did not answer in time" : "the relay cannot be reached");
    } finally {
      clearTimeout(timer);
    }
    const { answer, code } = readAnswer(text);
    if (response.status !== 200 || answer === null || answer.ok !== true) {
      const message =
        answer !== null && typeof answer.message === "string"
          ? answer.message.slice(0, 300)
          : `the relay answered HTTP ${response.status}`;
      if (code === "EXPIRED_TIMESTAMP" && !retried && (await this._learnClock())) {
        return this._call(method, path, { query, body, keepalive, retried: true });
      }
      const retry = Number(response.headers.get("Retry-After") ?? 0) || 0;
      throw new RelayError(response.status === 200 ? 502 : response.status, code, message, retry);
    }
    return answer;
  }

  async _learnClock() {
    // This clock is off by more than the relay's ±300 s window: take the relay's time.
    try {
      const health = await this.health();
      if (health.time > 0) {
        this.skew = health.time - Math.floor(Date.now() / 1000);
        return true;
      }
    } catch {
      // the original error is the one to report
    }
    return false;
  }

  /** GET /v1/health, unsigned (probeRelay). @returns {Promise<{ok: true, version: string, time: number}>} */
  health() {
    return probeRelay(this.base, { timeoutMs: this.timeoutMs });
  }

  /**
   * POST /v1/register: presence for ttlS seconds, signed with the signing key
   * it carries; the relay keeps that key for this node, and later signed calls
   * are verified against it (each key is a realm of its own: the relay never
   * takes the first key of a circle as the circle's).
   * @param {{ttlS?: number}} [options]
   * @returns {Promise<object>} `{ok, server_time, expires_at, observed_host}`
   */
  async register({ ttlS = 120 } = {}) {
    const body = {
      node_id: this.nodeId,
      circle_hint: await this.circleHint(),
      endpoints: [],
      capabilities: { relay: false, transport: ["ws"] },
      ttl_s: ttlS,
      signing_key: await this._signingKey(),
    };
    // A relay without epochs ignores the key (unknown keys are ignored).
    if (!this.succeeds) return this._call("POST", "/register", { body });
    body.succeeds = await succession(this.succeeds, body.signing_key);
    try {
      return await this._call("POST", "/register", { body });
    } catch (e) {
      if (!(e instanceof RelayError) || e.code !== "UNKNOWN_PREDECESSOR") throw e;
      // The relay never saw the old realm (re-keyed before we used it, or forgotten): register
      // there first, so it can check the proof (as felund.relay.presence does).
      await new RelayClient({ ...this._options(), secretHex: this.succeeds }).register({ ttlS: MIN_TTL_S });
      return this._call("POST", "/register", { body });
    }
  }

  _options() {
    return {
      baseUrl: this.base,
      circleId: this._circleId ?? undefined,
      circleHint: this._hint ?? undefined,
      nodeId: this.nodeId,
      timeoutMs: this.timeoutMs,
    };
  }

  /**
   * DELETE /v1/register (keepalive: it may run while the page closes).
   * @returns {Promise<boolean>} whether a registration was removed
   */
  async unregister() {
    const answer = await this._call("DELETE", "/register", {
      body: { node_id: this.nodeId, circle_hint: await this.circleHint() },
      keepalive: true,
    });
    return answer.removed === true;
  }

  /**
   * A DELETE /v1/register signed now, to send later with no step in between: a page
   * that closes may be gone before the first await of unregister(). Good while the
   * relay takes its timestamp (±300 s); its nonce is used once.
   * @returns {Promise<() => void>} sends it (keepalive; its answer is not awaited)
   */
  async goodbye() {
    const bodyText = JSON.stringify({ node_id: this.nodeId, circle_hint: await this.circleHint() });
    const headers = await this._signedHeaders("DELETE", "/register", bodyText, true);
    const url = `${this.base}/v1/register`;
    return () => {
      fetch(url, { method: "DELETE", headers, body: bodyText, cache: "no-store", credentials: "omit", keepalive: true }).catch(
        () => {},
      );
    };
  }

  /**
   * GET /v1/peers: the circle's other registered nodes.
   * @param {{limit?: number}} [options]
   * @returns {Promise<object[]>}
   */
  async peers({ limit = 50 } = {}) {
    const answer = await this._call("GET", "/peers", {
      query: { circle_hint: await this.circleHint(), limit: String(limit) },
    });
    return Array.isArray(answer.peers) ? answer.peers : [];
  }

  /**
   * POST /v1/messages, in batches of 50.
   * @param {object[]} wires v1 wire messages
   * @returns {Promise<number>} how many the relay stored (duplicates are not counted)
   */
  async postMessages(wires) {
    const hint = await this.circleHint();
    let stored = 0;
    for (let i = 0; i < wires.length; i += MAX_BATCH) {
      const answer = await this._call("POST", "/messages", {
        body: { circle_hint: hint, messages: wires.slice(i, i + MAX_BATCH) },
      });
      stored += typeof answer.stored === "number" ? answer.stored : 0;
    }
    return stored;
  }

  /**
   * GET /v1/messages after a position. Our relay answers `next_cursor`, a
   * strictly increasing cursor that never skips a message; a relay without it
   * ignores `cursor` and pages by `since` (whole seconds), which is sent too.
   * @param {{cursor?: number|null, since?: number, limit?: number}} [options]
   * @returns {Promise<{messages: object[], nextCursor: number|null, serverTime: number}>}
   *   nextCursor null: the relay has no cursor; page on with since = serverTime
   */
  async pullMessages({ cursor = 0, since = 0, limit = DEFAULT_PAGE } = {}) {
    const query = { circle_hint: await this.circleHint(), since: String(since), limit: String(limit) };
    if (cursor !== null && cursor !== undefined) query.cursor = String(cursor);
    const answer = await this._call("GET", "/messages", { query });
    const nextCursor = answer.next_cursor;
    return {
      messages: Array.isArray(answer.messages) ? answer.messages : [],
      nextCursor: typeof nextCursor === "number" && Number.isInteger(nextCursor) ? nextCursor : null,
      serverTime: typeof answer.server_time === "number" ? answer.server_time : 0,
    };
  }

  /**
   * POST /v1/signal (signed): one call signal for one node (addendum §1.5).
   * @param {{sessionId: string, toNodeId: string, type: string, payload: string, ttlS?: number}} signal
   * @returns {Promise<object>} `{ok, server_time}`
   */
  async postSignal({ sessionId, toNodeId, type, payload, ttlS = 120 }) {
    const body = {
      session_id: sessionId,
      from_node_id: this.nodeId,
      to_node_id: toNodeId,
      circle_hint: await this.circleHint(),
      type,
      payload,
      ttl_s: ttlS,
    };
    return this._call("POST", "/signal", { body });
  }

  /**
   * GET /v1/signal (signed): the signals for this node after sinceId, oldest first.
   * @param {{sinceId?: number}} [options]
   * @returns {Promise<object[]>} `{id, session_id, from_node, to_node, type, payload, created_at}`
   */
  async pullSignals({ sinceId = 0 } = {}) {
    const query = { to_node_id: this.nodeId, since_id: String(sinceId), circle_hint: await this.circleHint() };
    const answer = await this._call("GET", "/signal", { query });
    return Array.isArray(answer.signals) ? answer.signals : [];
  }

  /**
   * The WebSocket feed /v1/relay/ws: calls onMessages(messages, serverTime) for every
   * batch the relay pushes (the last 120 s on connect, then what others post),
   * answers PING, sends its own PING every pingMs and reconnects after retryMs
   * when the connection fails or goes quiet, until close().
   * @param {{onMessages: function(object[], number): void, onState?: function(string): void,
   *   retryMs?: number, pingMs?: number, idleMs?: number}} handlers
   *   onState gets "connecting", "open" or "closed"
   * @returns {{close: function(): void}}
   */
  openFeed({ onMessages, onState = () => {}, retryMs = 5000, pingMs = 15000, idleMs = 45000 }) {
    let ws = null;
    let closed = false;
    let retryTimer = null;
    let pingTimer = null;
    let lastFrame = 0;
    const clearTimers = () => {
      clearTimeout(retryTimer);
      clearInterval(pingTimer);
      retryTimer = pingTimer = null;
    };
    const scheduleRetry = () => {
      clearTimers();
      if (!closed) retryTimer = setTimeout(connect, retryMs);
    };
    const connect = async () => {
      if (closed) return;
      onState("connecting");
      let url;
      try {
        const sig = await this._signature("GET", "/relay/ws", "");
        const params = new URLSearchParams({
          circle_hint: await this.circleHint(),
          node_id: this.nodeId,
          ts: String(sig.ts),
          nonce: sig.nonce,
          signature: sig.signature,
        });
        url = `${this.base.replace(/^http/, "ws")}/v1/relay/ws?${params}`;
      } catch {
        onState("closed");
        scheduleRetry();
        return;
      }
      if (closed) return;
      const socket = new WebSocket(url);
      ws = socket;
      let opened = false;
      socket.onopen = () => {
        opened = true;
        lastFrame = Date.now();
        onState("open");
        pingTimer = setInterval(() => {
          if (Date.now() - lastFrame > idleMs) {
            socket.close(4000, "quiet"); // a half-open connection: start again
            return;
          }
          if (socket.readyState === WebSocket.OPEN) socket.send('{"t":"PING"}');
        }, pingMs);
      };
      socket.onmessage = (event) => {
        lastFrame = Date.now();
        let frame;
        try {
          frame = loads(String(event.data));
        } catch {
          return;
        }
        if (!isObject(frame)) return;
        if (frame.t === "PING") {
          socket.send('{"t":"PONG"}');
        } else if (frame.t === "MESSAGES" && Array.isArray(frame.messages)) {
          const serverTime = typeof frame.server_time === "number" ? frame.server_time : 0;
          try {
            onMessages(frame.messages, serverTime);
          } catch (e) {
            console.warn("felund: feed handler failed", e);
          }
        }
      };
      socket.onclose = () => {
        if (ws !== socket) return;
        ws = null;
        if (opened || !closed) onState("closed");
        scheduleRetry();
      };
    };
    connect();
    return {
      close: () => {
        closed = true;
        clearTimers();
        if (ws) {
          const socket = ws;
          ws = null;
          socket.close(1000, "bye");
        }
      },
    };
  }
}

/**
 * GET /v1/ice (unsigned): the STUN/TURN servers the relay's operator names, as
 * RTCIceServer objects. A relay without the route, or any failure, gives []:
 * then calls use host candidates only (the page never picks a server itself).
 * @param {string} baseUrl
 * @returns {Promise<object[]>}
 */
export async function relayIceServers(baseUrl, { timeoutMs = TIMEOUT_MS } = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(`${normalizeRelayUrl(baseUrl)}/v1/ice`, {
      cache: "no-store",
      credentials: "omit",
      signal: abort.signal,
    });
    if (response.status !== 200) return [];
    const { answer } = readAnswer(await response.text());
    return iceServerList(answer?.ice_servers);
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
  }
}

/** The well-formed RTCIceServer entries of a list (urls: stun:/stuns:/turn:/turns: only), at most 8. */
export function iceServerList(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const entry of list.slice(0, 8)) {
    if (entry === null || typeof entry !== "object") continue;
    const urls = (Array.isArray(entry.urls) ? entry.urls : [entry.urls]).filter(
      (u) => typeof u === "string" && /^(stun|stuns|turn|turns):[^\s]{1,250}$/.test(u),
    );
    if (!urls.length) continue;
    const server = { urls };
    if (typeof entry.username === "string") server.username = entry.username.slice(0, 256);
    if (typeof entry.credential === "string") server.credential = entry.credential.slice(0, 256);
    out.push(server);
  }
  return out;
}

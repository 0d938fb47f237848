// The other client's direct DataChannel transport (addendum §1.8), sans IO: one
// session's handshake and frames. The caller moves text frames and wall time in
// and out; nothing here touches a channel or a timer.
//
// Unlike the other client (its §1.8 weaknesses) nothing but HELLO and AUTH is
// taken before the peer's AUTH is verified: any other frame first, a bad AUTH,
// a second HELLO, an oversized or malformed frame, too many frames in a window,
// or no verified AUTH within AUTH_MS closes the session, and it has given the
// peer nothing but our HELLO and (once its HELLO came) our AUTH. Messages taken
// are the enc-only wire form; the caller opens them through the one ingest path
// (CircleSync.ingestDirect), as messages pulled from the relay.

import { hmacHex, secretBytes } from "./crypto.js";
import { randomHex } from "./bytes.js";
import { isObject } from "./pyjson.js";
import { readSignalOf } from "./callmesh.js";

export const LABEL = "felund-gossip";
export const MAX_FRAME = 256 * 1024; // characters of one frame (the usual SCTP message limit)
export const MAX_BATCH = 100; // messages in one MSGS_SEND (what the other client sends)
export const AUTH_MS = 10000; // open to verified AUTH
export const WINDOW_MS = 10000;
export const MAX_FRAMES_PER_WINDOW = 200;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** The `auth` of AUTH: HMAC-SHA256 (circle secret) over "dc-auth:<sender nonce>:<receiver nonce>". */
export function dcAuth(secretHex, senderNonce, receiverNonce) {
  return hmacHex(secretBytes(secretHex), `dc-auth:${senderNonce}:${receiverNonce}`);
}

/** The DataChannel session id: the two node ids sorted and joined with ":" (§1.6). */
export const dcSessionId = (a, b) => (a < b ? `${a}:${b}` : `${b}:${a}`);

/** The DataChannel's signal types (§1.6), offer, answer, candidate. */
export const DC_TYPES = ["offer", "answer", "candidate"];

/** A received DataChannel signal for us (`{id, peer, type, description | candidate}`), or null. */
export const readDcSignal = (signal, me) => readSignalOf(signal, me, DC_TYPES, (peer) => dcSessionId(me, peer));

/** Who offers (§1.6.1): the smaller node id. */
export const offers = (me, peer) => me < peer;

/** One session's protocol: feed it frames, send what it returns. */
export class DcSession {
  /** @param {{secretHex: string, nodeId: string, circleHint: string, now: number, nonce?: string}} o */
  constructor({ secretHex, nodeId, circleHint, now, nonce = randomHex(16) }) {
    this.secretHex = secretHex;
    this.nodeId = nodeId;
    this.circleHint = circleHint;
    this.nonce = nonce;
    this.openedAt = now;
    this.peerNonce = null;
    this.sentAuth = false;
    this.heldAuth = null; // an AUTH that came before the HELLO (§1.8)
    this.authed = false;
    this.closed = null; // the reason, once closed
    this._window = { start: now, count: 0 };
  }

  /** The frame to send when the channel opens. */
  hello() {
    return JSON.stringify({ type: "HELLO", node_id: this.nodeId, circle_hint: this.circleHint, nonce: this.nonce });
  }

  /** A frame to every authenticated session for one new message (null before AUTH). */
  msgNew(wire) {
    return this.authed && !this.closed ? JSON.stringify({ type: "MSG_NEW", message: wire }) : null;
  }

  /** The frame of our newest messages once authenticated. */
  msgsSend(wires) {
    return JSON.stringify({ type: "MSGS_SEND", messages: wires.slice(-MAX_BATCH) });
  }

  /** Closed if the peer has not authenticated by now; returns the reason or null. */
  tick(now) {
    if (!this.closed && !this.authed && now - this.openedAt > AUTH_MS) this.closed = "auth timeout";
    return this.closed;
  }

  /**
   * Take one received frame.
   * @returns {Promise<{send: string[], messages: object[], authed: boolean, close: string|null}>}
   *   authed is true once, on the frame that completes the handshake (then send our MSGS_SEND).
   */
  async receive(text, now) {
    const out = { send: [], messages: [], authed: false, close: null };
    const fail = (reason) => {
      this.closed = reason;
      out.close = reason;
      return out;
    };
    if (this.closed) return fail(this.closed);
    if (this.tick(now)) return fail(this.closed);
    if (now - this._window.start >= WINDOW_MS) this._window = { start: now, count: 0 };
    if (++this._window.count > MAX_FRAMES_PER_WINDOW) return fail("too many frames");
    if (typeof text !== "string" || text.length > MAX_FRAME) return fail("frame too large");
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return fail("frame not JSON");
    }
    if (!isObject(f) || typeof f.type !== "string") return fail("frame without type");
    if (f.type === "HELLO") {
      if (this.peerNonce !== null || typeof f.nonce !== "string" || !HEX32.test(f.nonce)) return fail("bad HELLO");
      this.peerNonce = f.nonce;
      out.send.push(JSON.stringify({ type: "AUTH", auth: await dcAuth(this.secretHex, this.nonce, f.nonce) }));
      this.sentAuth = true;
      if (this.heldAuth !== null) return this._verify(this.heldAuth, out, fail);
      return out;
    }
    if (f.type === "AUTH") {
      if (this.authed || this.heldAuth !== null || typeof f.auth !== "string" || !HEX64.test(f.auth)) return fail("bad AUTH");
      if (this.peerNonce === null) {
        this.heldAuth = f.auth;
        return out;
      }
      return this._verify(f.auth, out, fail);
    }
    if (!this.authed) return fail("frame before AUTH");
    if (f.type === "MSGS_SEND") {
      if (!Array.isArray(f.messages) || f.messages.length > MAX_BATCH) return fail("bad MSGS_SEND");
      out.messages = f.messages;
      return out;
    }
    if (f.type === "MSG_NEW") {
      if (!isObject(f.message)) return fail("bad MSG_NEW");
      out.messages = [f.message];
      return out;
    }
    return out; // an unknown type from a verified peer: ignored, as the other client does
  }

  async _verify(auth, out, fail) {
    this.heldAuth = null;
    const want = await dcAuth(this.secretHex, this.peerNonce, this.nonce);
    if (auth !== want) return fail("AUTH mismatch");
    this.authed = true;
    out.authed = true;
    return out;
  }
}

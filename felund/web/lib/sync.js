// One circle kept in sync with its relay: registration, the WebSocket feed,
// polling with the relay's cursor, the outbox, and a state for the UI.
//
// - Registers (signed) at start and every registerMs (60 s); asks the relay how
//   many other members it has registered after each and every peersMs (10 s).
// - Takes new messages from the feed; polls with the cursor every pollMs (5 s)
//   while the feed is down, every feedPollMs (30 s) while it is up as a safety
//   net, and at once whenever the feed (re)connects. The cursor is persisted
//   after each page, so a reload resumes where it stopped and skips nothing.
// - Every message is opened (wire.openMessage) and its author's signature
//   checked (trust.check) before it is stored: a bad one is dropped, counted
//   by kind (rejected) with a console warning; an unsigned one is stored
//   unverified; the first key seen for an older node id is pinned for this
//   circle. Duplicates (by msgId) are dropped before any of it, so onMessages
//   sees each message once and nothing is verified twice.
// - Our own messages are signed by the identity's key when it may sign for
//   our node id (trust.maySign), and stored verified.
// - send() stores the message and its outbox entry in one transaction, then
//   posts; the outbox is retried on every tick until the relay acknowledges.
//   Nothing is posted before a registration succeeded: it gives the relay this
//   node's signing key, against which the relay verifies a signed post.
// - nextControl() dates a control event of ours now, or a second after our
//   own last one, so that ours keep their order (ties break by hash), but
//   never after a peer's: a date a peer chose must not push ours past the
//   horizon the chat model holds events beyond (at most now + MAX_SKEW_S).
//   The node's store follows the same rule.
// - Epochs (SPEC-16 §3): every message is written under the newest epoch held
//   (keys, lib/epochs.js) and the relay is signed with that epoch's api key. A
//   message is opened by its key id; one under a plausible epoch not held yet
//   is kept sealed (its wire form only, in the store's sealed rows, shown
//   nowhere and never passed to onMessages) and opened by hold() once the
//   secret comes; follow(fold) takes the fold's chain and removals, unwraps our
//   wraps and walks the EPOCH_LINKs back to older epochs.
// - Private channels (lib/channels.js): a message under "<epoch key id>/<part>" opens
//   with the channel's part held here (a key channel's typed key, an invite channel's
//   epoch secret unwrapped from a CHANNEL_KEY_EVT); one the page cannot open is kept
//   sealed as any other, and opened when the part comes (holdParts, follow).

import {
  CONTROL_CHANNEL,
  InvalidMessage,
  checkChannelId,
  checkText,
  composeMessage,
  keyIdOf,
  openMessage,
  parseMessage,
} from "./wire.js";
import { epochKeyId, parseKeyId, unwrap, wrapContext } from "./wrap.js";
import { EpochKeys } from "./epochs.js";
import { channelWrapContext, epochOfKeyId, invitePart } from "./channels.js";
import { MAX_SKEW_S, dated, eventText } from "./chatmodel.js";
import { circleId as circleIdOf, newMsgId } from "./ids.js";
import { isObject, loads } from "./pyjson.js";
import { b64decode, b64encode, bytesToHex } from "./bytes.js";
import { Verdict, check, maySign } from "./trust.js";
import { DEFAULT_PAGE, RelayClient, RelayDown, RelayError, normalizeRelayUrl } from "./relay.js";

/** The states a CircleSync can be in. */
export const STATES = Object.freeze(["connecting", "online", "offline", "relay-down", "forbidden"]);
const MAX_PAGES_PER_PULL = 100;
// EPOCH_LINK candidates kept: epochs named, and candidates for one (a bogus link costs one
// AES-GCM try; a circle has at most as many epochs as control events).
const MAX_LINKED_EPOCHS = 1024;
const MAX_LINK_CANDIDATES = 8;
const SECRET_RE = /^[0-9a-f]{64}$/;
const EPOCH_ENDED = "EPOCH_ENDED"; // the relay's refusal of a post signed with an ended epoch's key
// A goodbye signed this long ago is still inside the relay's ±300 s window, with room.
const GOODBYE_FRESH_MS = 240000;

/** Keeps one circle in sync with its relay. */
export class CircleSync {
  /**
   * @param {import("./store.js").Store} store
   * @param {{circle: {circleId: string, secret: string, relayUrl?: string},
   *   identity: {nodeId: string, displayName: string, key?: import("./trust.js").IdentityKey},
   *   relayUrl?: string,
   *   onMessages?: function(import("./store.js").StoredMessage[]): void,
   *   onState?: function(string, Error|null): void,
   *   onOutbox?: function(string[]): void,
   *   onPeers?: function(number): void, onSent?: function(object): void,
   *   pollMs?: number, feedPollMs?: number, registerMs?: number, feedRetryMs?: number, peersMs?: number,
   *   useFeed?: boolean}} options
   *   relayUrl overrides circle.relayUrl ("" = the page's origin); onMessages gets
   *   new messages from others (control ones too), never the ones send() returned;
   *   onOutbox gets the msgIds still waiting for the relay whenever that changes;
   *   onPeers gets how many other members the relay has registered, after each registration
   *   and every peersMs;
   *   onSent gets the wire form of each message of ours once stored (the direct links send it on).
   */
  constructor(store, options) {
    const { circle, identity } = options;
    this.store = store;
    this.circle = circle;
    /** Read at each send: the app may change displayName. */
    this.identity = identity;
    this.relayUrl = normalizeRelayUrl(options.relayUrl ?? circle.relayUrl ?? "");
    this.onMessages = options.onMessages ?? (() => {});
    this.onState = options.onState ?? (() => {});
    this.onOutbox = options.onOutbox ?? (() => {});
    this.onPeers = options.onPeers ?? (() => {});
    this.onSent = options.onSent ?? (() => {});
    this.pollMs = options.pollMs ?? 5000;
    this.feedPollMs = options.feedPollMs ?? 30000;
    this.registerMs = options.registerMs ?? 60000;
    this.feedRetryMs = options.feedRetryMs ?? 5000;
    this.peersMs = options.peersMs ?? 10000;
    this.useFeed = options.useFeed ?? true;
    /** @type {string} one of STATES */
    this.state = "connecting";
    /** @type {Error|null} the error behind the current state, if any */
    this.lastError = null;
    /** @type {Set<string>} msgIds sent but not yet acknowledged by the relay */
    this.pending = new Set();
    /** @type {Map<string, number>} messages dropped, by InvalidMessage kind (signature, key_mismatch, ...) */
    this.rejected = new Map();
    /** @type {Map<string, Uint8Array>} keys pinned in this circle for older node ids */
    this._pins = new Map();
    /** The epoch secrets held (the root's is circle.secret; start() reads the others). */
    this.keys = new EpochKeys(circle.secret, [], circle.circleId);
    this.client = this._clientFor(circle.secret);
    this._known = new Set(); // msgIds stored (or sent, or kept sealed) here
    this._links = new Map(); // EPOCH_LINK candidates: epoch id -> Set of prev secrets
    this._tried = new Set(); // wraps to us tried (a fold's epochs are bounded, so is this)
    this._warned = new Set();
    this._position = null; // {relay, cursor, since}
    this._registeredAt = 0;
    this._goodbye = null; // () => void: the DELETE /v1/register signed at the last registration
    this._feed = null;
    this._feedOpen = false;
    this._timer = null;
    this._running = null;
    this._again = false;
    this._flushing = null;
    this._flushAgain = false;
    this._ingestChain = Promise.resolve();
    this._started = false;
    this._loaded = false; // start() has read the store (known ids, outbox, cursor)
    this._stopped = false;
    this._controlTs = 0; // newest created_ts of our own __control messages
    this._controlLoaded = false;
    this._onOnline = () => this.syncNow();
    this._onOffline = () => this._setState("offline", new RelayDown("this device is offline"));
  }

  /** Load what the store holds, register, then keep in sync until stop(). */
  async start() {
    if (this._started) return;
    this._started = true;
    const { circleId } = this.circle;
    for (const e of await this.store.epochs(circleId)) this.keys.add(e);
    for (const k of await this.store.channelKeys(circleId)) this.keys.addPart(k.channelId, k.part, k.secret);
    for (const row of await this.store.sealed(circleId)) this._known.add(row.msgId);
    this._useNewest();
    // Ids alone for what is known (no record read); only control events are looked into.
    for (const msgId of await this.store.messageIds(circleId)) this._known.add(msgId);
    for (const m of await this.store.messages(circleId, { channelId: CONTROL_CHANNEL })) {
      this._noteOwnControl(m);
      this._noteLink(m);
    }
    this._controlLoaded = true;
    for (const [nodeId, pk] of await this.store.pins(circleId)) this._pins.set(nodeId, b64decode(pk));
    for (const w of await this.store.outbox(circleId)) {
      this.pending.add(w.msg_id);
      this._known.add(w.msg_id);
    }
    if (this.pending.size) this._emitOutbox();
    const saved = await this.store.getCursor(circleId);
    this._position =
      isObject(saved) && saved.relay === this.relayUrl
        ? saved
        : { relay: this.relayUrl, cursor: 0, since: 0 };
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    this._loaded = true;
    await this.syncNow();
    if (this.useFeed && !this._stopped) this._openFeed();
    if (!this._stopped) this._peersTimer = setInterval(() => this._askPeers(), this.peersMs);
  }

  /** Whether the relay has our registration: calls that name us (peers, signals) wait for it. */
  get registered() {
    return this._registeredAt > 0;
  }

  /** How many others the relay has registered, to onPeers; once registered, and never throws. */
  async _askPeers() {
    if (this._stopped || !this.registered) return;
    try {
      this.onPeers((await this.client.peers()).length);
    } catch {
      // The relay is down or refused: the tick says so in the state; the count waits.
    }
  }

  /**
   * Stop syncing (timers, feed, listeners).
   * @param {{unregister?: boolean}} [options] unregister: also DELETE /v1/register (page close)
   */
  stop({ unregister = false } = {}) {
    this._stopped = true;
    clearTimeout(this._timer);
    clearInterval(this._peersTimer);
    this._timer = null;
    this._feed?.close();
    this._feed = null;
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    if (!unregister) return;
    // Signed at the last registration: fresh enough for the relay's ±300 s if that was
    // less than GOODBYE_FRESH_MS ago; else signed now (a page still open gets it out).
    if (this._goodbye && Date.now() - this._registeredAt < GOODBYE_FRESH_MS) this._goodbye();
    else this.client.unregister().catch(() => {});
    this._goodbye = null;
  }

  /**
   * Compose (encrypted), store (as pending) and post a message of this node.
   * @param {string} channelId
   * @param {string} text
   * @param {{keyId: string, secret: string}|null} [seal] a private channel's (keys.channelSeal)
   * @returns {Promise<import("./store.js").StoredMessage & {pending: boolean}>}
   * @throws {InvalidMessage} for a bad channel id or text (nothing is stored then)
   */
  send(channelId, text, seal = null) {
    return this._send(channelId, text, undefined, undefined, undefined, seal);
  }

  async _send(channelId, text, createdTs, msgId, epoch = this.keys.newest(), seal = null) {
    checkChannelId(channelId);
    checkText(text);
    const { circleId } = this.circle;
    const { nodeId, key } = this.identity;
    // An older id that happens to carry the derived mark cannot sign: it writes unsigned.
    const signer = key && maySign(key, nodeId) ? key : null;
    const wire = await composeMessage(seal ? seal.secret : epoch.secret, {
      circleId,
      channelId,
      authorNodeId: nodeId,
      displayName: this.identity.displayName,
      text,
      createdTs, // undefined: now
      msgId, // undefined: a fresh one
      encrypt: true,
      key: signer,
      keyId: seal ? seal.keyId : epochKeyId(epoch.n, epoch.epochId),
    });
    const opened = {
      circleId,
      msgId: wire.msg_id,
      channelId,
      authorNodeId: wire.author_node_id,
      displayName: this.identity.displayName,
      createdTs: wire.created_ts,
      text,
      verified: signer !== null,
      signer: signer ? b64encode(signer.publicKey) : null,
      wire,
    };
    await this.store.addOutgoing(circleId, opened);
    this._known.add(opened.msgId);
    this._noteOwnControl(opened);
    this._noteLink(opened);
    this.pending.add(opened.msgId);
    this._emitOutbox();
    this.onSent(wire);
    // Before start() has read the store, its first pass posts the outbox.
    // Registered: post now. Not (yet, or again after a failure): a sync pass
    // registers first, so the relay can verify the post.
    if (this._loaded && !this._stopped) {
      if (this._registeredAt) this._flush().catch((e) => this._failed(e));
      else this.syncNow();
    }
    return { ...opened, pending: true };
  }

  /**
   * When and as what our next control event is written: now, or a second after
   * our own last one, at most now + MAX_SKEW_S (see the top of this file).
   * @returns {Promise<{createdTs: number, msgId: string}>}
   */
  async nextControl() {
    if (!this._controlLoaded) {
      // start() has not read the store yet: read the control events now.
      const known = await this.store.messages(this.circle.circleId, { channelId: CONTROL_CHANNEL });
      for (const m of known) this._noteOwnControl(m);
    }
    const now = Math.floor(Date.now() / 1000);
    const createdTs = Math.min(Math.max(now, this._controlTs + 1), now + MAX_SKEW_S);
    return { createdTs, msgId: await newMsgId(this.identity.nodeId, createdTs) };
  }

  /**
   * Send a control event (chatmodel) on the __control channel, as nextControl() said.
   * @param {object} event e.g. {t: "CHANNEL_EVT", op: "create", ...}
   * @param {{createdTs: number, msgId: string}} slot
   * @param {import("./epochs.js").HeldEpoch} [epoch] sealed under it (default: the newest;
   *   an EPOCH_EVT goes under its parent, an EPOCH_LINK under its own epoch)
   * @returns {Promise<import("./store.js").StoredMessage & {pending: boolean}>}
   */
  sendControl(event, { createdTs, msgId }, epoch = undefined) {
    return this._send(CONTROL_CHANNEL, eventText(dated(event, createdTs)), createdTs, msgId, epoch);
  }

  _noteOwnControl(m) {
    // Ours by author: a peer can write in our name, but not dated beyond the horizon here.
    const horizon = Math.floor(Date.now() / 1000) + MAX_SKEW_S;
    if (m.channelId !== CONTROL_CHANNEL || m.authorNodeId !== this.identity.nodeId) return;
    if (m.createdTs > this._controlTs && m.createdTs <= horizon) this._controlTs = m.createdTs;
  }

  /**
   * Register if due, pull, flush the outbox, now. Resolves when done (never rejects).
   * @returns {Promise<void>}
   */
  syncNow() {
    if (this._running) {
      this._again = true;
      return this._running;
    }
    this._running = (async () => {
      do {
        this._again = false;
        await this._tick();
      } while (this._again && !this._stopped);
      this._running = null;
      this._schedule();
    })();
    return this._running;
  }

  _schedule() {
    clearTimeout(this._timer);
    if (this._stopped) return;
    const wait = this._feedOpen ? this.feedPollMs : this.pollMs;
    this._timer = setTimeout(() => this.syncNow(), wait);
  }

  async _tick() {
    if (this._stopped) return;
    if (globalThis.navigator?.onLine === false) {
      this._setState("offline", new RelayDown("this device is offline"));
      return;
    }
    try {
      if (!this._registeredAt || Date.now() - this._registeredAt >= this.registerMs) {
        await this.client.register({ ttlS: Math.max(30, Math.min(600, Math.ceil((2 * this.registerMs) / 1000))) });
        this._registeredAt = Date.now();
        // The goodbye a closing page sends (stop): signed now, as no await may run then.
        this._goodbye = await this.client.goodbye().catch(() => null);
        // Whether anyone else meets us at this relay: with nobody, nothing can arrive.
        await this._askPeers();
      }
      this._setState("online", null);
      await this._flush().catch((e) => {
        // Our epoch has ended at the relay: a re-key we have not read yet. Read on: what
        // comes moves us to the new key, and the outbox goes out under it.
        if (!(e instanceof RelayError && e.code === EPOCH_ENDED)) throw e;
        this.lastError = e;
      });
      await this._pull();
    } catch (e) {
      this._failed(e);
    }
  }

  _failed(e) {
    if (e instanceof RelayDown) {
      this._setState(globalThis.navigator?.onLine === false ? "offline" : "relay-down", e);
      this._registeredAt = 0;
    } else if (e instanceof RelayError) {
      if (e.status === 401 || e.status === 403) {
        this._setState("forbidden", e);
        this._registeredAt = 0;
      } else if (e.status >= 500 || e.status === 404) {
        // 404: no relay API at that address (a static host, a wrong path).
        this._setState("relay-down", e);
        this._registeredAt = 0;
      } else {
        // 429 and other refusals: the state stands; the next tick tries again.
        this.lastError = e;
        if (e.status !== 429) console.warn("felund: the relay refused a request", e.status, e.code);
      }
    } else {
      console.warn("felund: sync failed", e);
      this.lastError = e;
    }
  }

  _setState(state, error) {
    this.lastError = error;
    if (state === this.state) return;
    this.state = state;
    try {
      this.onState(state, error);
    } catch (err) {
      console.warn("felund: onState handler failed", err);
    }
  }

  _emitOutbox() {
    try {
      this.onOutbox([...this.pending]);
    } catch (err) {
      console.warn("felund: onOutbox handler failed", err);
    }
  }

  _openFeed() {
    this._feed = this.client.openFeed({
      retryMs: this.feedRetryMs,
      onMessages: (messages) => {
        this._ingest(messages).catch((e) => this._failed(e));
      },
      onState: (feedState) => {
        const wasOpen = this._feedOpen;
        this._feedOpen = feedState === "open";
        // Catch up through the cursor on every (re)connection; poll faster once it drops.
        if (this._feedOpen && !wasOpen) this.syncNow();
        else if (wasOpen && !this._feedOpen && !this._running) this._schedule();
      },
    });
  }

  async _pull() {
    const { circleId } = this.circle;
    for (let page = 0; page < MAX_PAGES_PER_PULL && !this._stopped; page++) {
      const pos = this._position;
      const answer = await this.client.pullMessages({
        cursor: pos.cursor,
        since: pos.since,
        limit: DEFAULT_PAGE,
      });
      await this._ingest(answer.messages);
      // A relay without cursors pages by since = server_time (the spec's v1 paging).
      this._position = {
        relay: this.relayUrl,
        cursor: answer.nextCursor,
        since: Math.max(0, answer.serverTime),
      };
      await this.store.putCursor(circleId, this._position);
      if (answer.messages.length < DEFAULT_PAGE) break;
    }
  }

  /**
   * Messages from a direct DataChannel peer (lib/dctransport.js): the one ingest
   * path of relay-pulled ones (opened, verified, deduped, stored, reported).
   */
  ingestDirect(raws) {
    return this._ingest(raws);
  }

  /** The wire forms of our newest stored messages, oldest first (a DataChannel MSGS_SEND). */
  async newestWires(n) {
    const all = await this.store.messages(this.circle.circleId);
    return all
      .filter((m) => m.wire)
      .sort((a, b) => a.createdTs - b.createdTs)
      .slice(-n)
      .map((m) => m.wire);
  }

  /** Verify, dedupe and store raw messages, one batch at a time; report the new ones. */
  _ingest(raws) {
    const run = this._ingestChain.then(() => this._ingestNow(raws));
    this._ingestChain = run.catch(() => {});
    return run;
  }

  async _ingestNow(raws) {
    const { circleId } = this.circle;
    const opened = [];
    const pins = [];
    const sealed = [];
    const batch = new Set();
    for (const raw of raws) {
      const id = isObject(raw) && typeof raw.msg_id === "string" ? raw.msg_id : null;
      if (id !== null && (this._known.has(id) || batch.has(id))) continue;
      try {
        const msg = parseMessage(raw);
        const keyId = keyIdOf(msg);
        const secret = await this.keys.secretOf(keyId, msg.channel_id);
        if (secret === null) {
          if (msg.circle_id !== circleId) throw new InvalidMessage("other_circle", "circle_id");
          if (!this.keys.plausible(keyId)) throw new InvalidMessage("unknown_key", "enc.key_id");
          sealed.push({ msgId: msg.msg_id, keyId, wire: msg });
        } else {
          opened.push(await this._judge(secret, keyId, msg, pins));
        }
        batch.add(msg.msg_id);
      } catch (e) {
        if (!(e instanceof InvalidMessage)) throw e;
        this._refused(e, id);
      }
    }
    if (sealed.length) {
      const { stored, full } = await this.store.putSealed(circleId, sealed);
      for (const msgId of stored) this._known.add(msgId);
      for (const msgId of full) this._refused(new InvalidMessage("sealed_full", "sealed"), msgId);
    }
    await this._keep(opened, pins);
    // A link, or the EPOCH_EVT it opens, may be what just came.
    if (this._links.size && (opened.length || sealed.length)) {
      const found = await this._walkLinks();
      if (found.length) await this._holdNow(found);
    }
  }

  /**
   * Open a message with the secret its key id names, check its signature and the
   * epoch refusals; the opened message, marked verified or not.
   * @throws {InvalidMessage}
   */
  async _judge(secret, keyId, raw, pins) {
    const m = await openMessage(secret, this.circle.circleId, raw);
    // Our own id is signed for by our own key only, whatever a peer says first.
    const own = m.authorNodeId === this.identity.nodeId ? this.identity.key?.publicKey : undefined;
    const pinned = own ?? this._pins.get(m.authorNodeId) ?? null;
    const verdict = await check(m.signed, pinned, m);
    m.verified = verdict !== Verdict.UNSIGNED;
    const refusal = this.keys.refusal(m.authorNodeId, epochOfKeyId(keyId), m.verified);
    if (refusal) throw new InvalidMessage(refusal, "epoch");
    if (verdict === Verdict.FIRST_SIGHT) {
      this._pins.set(m.authorNodeId, m.signed.pk);
      const firstSeen = Math.floor(Date.now() / 1000);
      pins.push({ nodeId: m.authorNodeId, pk: b64encode(m.signed.pk), firstSeen });
    }
    m.signer = m.verified ? b64encode(m.signed.pk) : null;
    return m;
  }

  _refused(e, msgId) {
    this.rejected.set(e.kind, (this.rejected.get(e.kind) ?? 0) + 1);
    const key = msgId ?? "?";
    if (!this._warned.has(key)) {
      this._warned.add(key);
      // The kind and field only: never the content.
      console.warn(`felund: dropped a message that does not verify (${e.kind}: ${e.detail})`, key);
    }
  }

  /** Store opened messages and their pins; report the new ones. */
  async _keep(opened, pins) {
    if (!opened.length) return;
    const fresh = await this.store.putMessages(this.circle.circleId, opened, pins);
    for (const m of opened) {
      this._known.add(m.msgId);
      this._noteLink(m);
    }
    if (fresh.length && !this._stopped) {
      try {
        this.onMessages(fresh);
      } catch (err) {
        console.warn("felund: onMessages handler failed", err);
      }
    }
  }

  // ---- epochs ----------------------------------------------------------

  /**
   * Hold more epoch secrets: kept in the store, the newest written under and
   * signed with, and what was sealed under them opened (then judged as any message).
   * @param {Array<import("./epochs.js").HeldEpoch>} epochs
   * @returns {Promise<number>} how many were new here
   */
  hold(epochs) {
    const run = this._ingestChain.then(() => this._holdNow(epochs));
    this._ingestChain = run.catch(() => {});
    return run;
  }

  async _holdNow(epochs) {
    const { circleId } = this.circle;
    let added = 0;
    const todo = [...epochs];
    while (todo.length) {
      const epoch = todo.shift();
      if (!this.keys.add(epoch)) continue;
      added += 1;
      if (epoch.n === 0) {
        // The root, reached by the EPOCH_LINK walk of a member who joined by a later code.
        this.circle.secret = epoch.secret;
        await this.store.putCircle({ ...this.circle });
      } else {
        await this.store.putEpoch(circleId, epoch);
      }
      for (const [keyId, channelId] of this.keys.openedBy([epoch], [])) await this._reopen(keyId, channelId);
      todo.push(...(await this._walkLinks()));
    }
    if (added) this._useNewest();
    return added;
  }

  /** Open what waited sealed under keyId (of channelId only, for a private channel's). */
  async _reopen(keyId, channelId = null) {
    const { circleId } = this.circle;
    const all = await this.store.sealed(circleId, keyId);
    const rows = channelId === null ? all : all.filter((r) => r.wire.channel_id === channelId);
    if (!rows.length) return;
    const secret = await this.keys.secretOf(keyId, channelId ?? "");
    const opened = [];
    const pins = [];
    for (const row of rows) {
      try {
        opened.push(await this._judge(secret, keyId, row.wire, pins));
      } catch (e) {
        if (!(e instanceof InvalidMessage)) throw e;
        this._refused(e, row.msgId);
      }
    }
    await this._keep(opened, pins);
    await this.store.deleteSealed(circleId, rows.map((r) => r.msgId));
  }

  /**
   * Take a fold's verdict (lib/chatmodel.js derive): its winning chain and removals,
   * and the secrets wrapped to us in its epochs.
   * @param {import("./chatmodel.js").CircleState} state
   * @returns {Promise<number>} how many epochs were new here
   */
  async follow(state) {
    this.keys.follow({ chain: state.epochs.map((e) => e.epochId), removed: state.removed });
    const added = await this.hold(await this._unwrapped(state));
    if (!added) this._useNewest(); // the chain alone may name another newest
    await this.holdParts(await this._unwrappedChannels(state));
    return added;
  }

  /**
   * Hold private channels' parts: kept in the store, and what was sealed under them
   * (under every circle epoch held) opened.
   * @param {Array<{channelId: string, part: string, secret: string}>} parts
   * @returns {Promise<number>} how many were new here
   */
  holdParts(parts) {
    const run = this._ingestChain.then(async () => {
      const gained = [];
      for (const { channelId, part, secret } of parts) {
        if (!this.keys.addPart(channelId, part, secret)) continue;
        await this.store.putChannelKey(this.circle.circleId, channelId, part, secret);
        gained.push([channelId, part]);
      }
      for (const [keyId, channelId] of this.keys.openedBy([], gained)) await this._reopen(keyId, channelId);
      return gained.length;
    });
    this._ingestChain = run.catch(() => {});
    return run;
  }

  /**
   * The invite channels' epochs of a fold wrapped to us and not held here, whose wrap
   * opens (every valid CHANNEL_KEY_EVT, any branch, as the node: each wrap tried once).
   */
  async _unwrappedChannels(state) {
    const { nodeId: me, xKey } = this.identity;
    const found = [];
    if (!xKey) return found;
    for (const k of state.channelKeys.values()) {
      const wrapped = k.wraps.get(me);
      const part = invitePart(k.n, k.epochId);
      if (wrapped === undefined || this.keys.hasPart(k.channelId, part) || this._tried.has(wrapped)) continue;
      this._tried.add(wrapped);
      const context = channelWrapContext(this.circle.circleId, k.channelId, k.epochId, me);
      const secret = await unwrap(xKey, wrapped, context);
      if (secret !== null) found.push({ channelId: k.channelId, part, secret: bytesToHex(secret) });
    }
    return found;
  }

  /** The epochs of a fold not held here whose wrap to us opens (each wrap tried once). */
  async _unwrapped(state) {
    const { nodeId: me, xKey } = this.identity;
    const found = [];
    if (!xKey) return found;
    for (const e of state.epochEvents.values()) {
      const wrapped = e.wraps.get(me);
      if (wrapped === undefined || this.keys.held.has(e.epochId) || this._tried.has(wrapped)) continue;
      this._tried.add(wrapped); // a wrap that does not open now never will: our key is fixed
      const secret = await unwrap(xKey, wrapped, wrapContext(this.circle.circleId, e.epochId, me));
      if (secret !== null) found.push({ n: e.n, epochId: e.epochId, secret: bytesToHex(secret) });
    }
    return found;
  }

  /** Keep an EPOCH_LINK's candidate secret of the epoch before its own. */
  _noteLink(m) {
    if (m.channelId !== CONTROL_CHANNEL || !m.text.includes('"EPOCH_LINK"')) return;
    let body;
    try {
      body = loads(m.text);
    } catch {
      return;
    }
    if (!isObject(body) || body.t !== "EPOCH_LINK") return;
    const { epoch_id: epochId, prev } = body;
    if (typeof epochId !== "string" || typeof prev !== "string" || !SECRET_RE.test(prev)) return;
    const prevs = this._links.get(epochId) ?? new Set();
    if (!prevs.size && this._links.size >= MAX_LINKED_EPOCHS) return;
    if (prevs.size < MAX_LINK_CANDIDATES) prevs.add(prev);
    this._links.set(epochId, prevs);
  }

  /**
   * The epochs before those held that an EPOCH_LINK opens: a candidate is taken
   * only if it opens the EPOCH_EVT whose id the link names (sealed under the
   * epoch before it), so a bogus link costs nothing.
   * @returns {Promise<Array<import("./epochs.js").HeldEpoch>>}
   */
  async _walkLinks() {
    const found = [];
    for (const [epochId, prevs] of this._links) {
      if (!this.keys.held.has(epochId)) continue;
      const row = await this.store.sealedOne(this.circle.circleId, epochId);
      if (!row) {
        // Known and not sealed: the EPOCH_EVT was opened, so the epoch before is held.
        if (this._known.has(epochId)) this._links.delete(epochId);
        continue; // else not come yet
      }
      const parent = parseKeyId(row.keyId);
      if (parent === null || this.keys.secretFor(row.keyId) !== null) {
        this._links.delete(epochId);
        continue;
      }
      for (const prev of prevs) {
        // The root also names the circle: a root that derives another id is none of ours.
        if (parent.n === 0 && (await circleIdOf(prev)) !== this.circle.circleId) continue;
        try {
          await openMessage(prev, this.circle.circleId, row.wire);
        } catch (e) {
          if (e instanceof InvalidMessage) continue;
          throw e;
        }
        found.push({ ...parent, secret: prev });
        this._links.delete(epochId);
        break;
      }
    }
    return found;
  }

  /** A relay client signing with the api key of an epoch's secret (succeeding the one before's). */
  _clientFor(secret, succeeds = "") {
    return new RelayClient({
      baseUrl: this.relayUrl,
      secretHex: secret,
      circleId: this.circle.circleId,
      nodeId: this.identity.nodeId,
      succeeds,
    });
  }

  /** Sign with the newest epoch's api key: a new realm at the relay, so register again. */
  _useNewest() {
    const newest = this.keys.newest();
    if (!newest || newest.secret === this.client.secretHex) return;
    this.client = this._clientFor(newest.secret, this.keys.parentOf(newest)?.secret ?? "");
    this._registeredAt = 0;
    if (this._feed) {
      this._feed.close();
      this._feedOpen = false;
      this._openFeed();
    }
    if (this._loaded && !this._stopped) this.syncNow();
  }

  _flush() {
    if (this._flushing) {
      this._flushAgain = true;
      return this._flushing;
    }
    this._flushing = (async () => {
      try {
        do {
          this._flushAgain = false;
          await this._flushOnce();
        } while (this._flushAgain && !this._stopped);
      } finally {
        this._flushing = null;
      }
    })();
    return this._flushing;
  }

  async _flushOnce() {
    // Never before a registration: the relay could not verify the post yet.
    if (!this._registeredAt) return;
    const wires = await this.store.outbox(this.circle.circleId);
    for (let i = 0; i < wires.length && !this._stopped; i += 50) {
      const batch = wires.slice(i, i + 50);
      try {
        await this.client.postMessages(batch);
        await this._acknowledged(batch);
      } catch (e) {
        if (!(e instanceof RelayError) || e.status !== 400) throw e;
        // One message the relay refuses must not hold back the others: one at a time.
        for (const wire of batch) {
          try {
            await this.client.postMessages([wire]);
          } catch (err) {
            if (!(err instanceof RelayError) || err.status !== 400) throw err;
            console.warn(`felund: the relay refused message ${wire.msg_id} (${err.code}); dropped from the outbox`);
          }
          await this._acknowledged([wire]);
        }
      }
    }
  }

  async _acknowledged(wires) {
    for (const w of wires) {
      await this.store.deleteOutbox(w.msg_id);
      this.pending.delete(w.msg_id);
    }
    this._emitOutbox();
  }
}


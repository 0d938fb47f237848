// The app's state: circles, their channels (derived from each circle's
// __control messages by lib/chatmodel.js, exactly as the node derives them),
// messages, pending sends, unread counts and the current view. No DOM here:
// the ui/*.js renderers read this and listen for "change".

import { CircleSync } from "../lib/sync.js";
import {
  CHANNEL_RULE,
  REMOVAL_REFUSALS,
  cannotFollow,
  channelEvent,
  circleNameEvent,
  dated,
  derive,
  epochEvent,
  epochLinkEvent,
  eventText,
  keptByOwner,
  keyHash,
  MAX_SKEW_S,
  madePrivate,
  nextRemoved,
  renameEvent,
  resolvePerson,
  roleEvent,
  whoCan,
  writerProblem,
} from "../lib/chatmodel.js";
import { DEFAULT_CHANNEL, CONTROL_CHANNEL } from "../lib/wire.js";
import { newMsgId, newSecret, circleId as circleIdOf } from "../lib/ids.js";
import { b64encode, hexToBytes } from "../lib/bytes.js";
import { generateKey, maySign, newOwnedSecret, nodeIdOf } from "../lib/trust.js";
import { generateXKey, wrap, wrapContext } from "../lib/wrap.js";
import {
  KEY_PART,
  MAX_TYPED_KEY,
  cannotSeal,
  channelKeyEvent,
  channelWrapContext,
  invitePart,
  recipients,
  rekeysDue,
} from "../lib/channels.js";
import { decodeInvite, encodeInvite, isUrlPeer } from "../lib/invite.js";
import { normalizeRelayUrl, relayIceServers } from "../lib/relay.js";
import { DirectLinks } from "./direct.js";

/** A mistake of the user's (bad command, unknown channel): shown as a notice, not logged. */
export class UserError extends Error {}

/** The most lines the message pane shows of a channel (its tail): what the first render reads. */
export const TAIL_LINES = 500;

const SETTING_RELAY = "relayUrl";
const SETTING_CURRENT = "current";
const readKey = (circleId) => `read:${circleId}`;


// A read mark is {ts, ids}: the newest createdTs read in a channel, and the
// msgIds read within READ_WINDOW_S before it. Timestamps are whole seconds
// from several clocks, so a message can arrive after the mark yet sort
// before it: within the window it still counts as unread until seen.
const READ_WINDOW_S = 300;

// The chat model's refusals as sentences: felund/store/ops.py _REFUSALS, the node's words.
const REFUSALS = {
  exists: "that channel exists already",
  no_channel: "there is no such channel; create it first",
  wrong_key: "wrong key for that channel",
  not_approved: "that channel is by invitation: ask with /channel request NAME, then wait",
  not_invite: "that channel is not by invitation; join it",
  general: "#general cannot be left",
  bad_channel: CHANNEL_RULE,
  bad_name: "names are 1 to 64 printable characters",
  needs_key: "that channel has a key: join it with the key",
  bad_target: "that node id is not well-formed (24 or 32 lowercase hex): no one to approve",
  future: "dated too far ahead of this node's clock: try again in a few seconds",
  unsigned: "this browser cannot sign for its node id, and what needs a role must be signed",
};

/**
 * Per channel, when ``me`` was last let in (its create or join, or an approve of it)
 * and when it last left (0: never): felund/store/ops.py ``_admitted_at``, and what the
 * sidebar leaves out.
 * @returns {Map<string, {admitted: number, left: number}>}
 */
function membershipDates(control, me) {
  const horizon = Math.floor(Date.now() / 1000) + MAX_SKEW_S;
  const dates = new Map();
  for (const ev of control) {
    if (ev.createdTs > horizon || !ev.text.includes('"CHANNEL_EVT"')) continue;
    let body;
    try {
      body = JSON.parse(ev.text);
    } catch {
      continue;
    }
    const mine = ev.authorNodeId === me;
    const op = body?.op;
    const d = dates.get(body?.channel_id) ?? { admitted: 0, left: 0 };
    if ((mine && (op === "create" || op === "join")) || (op === "approve" && body.target_node_id === me)) {
      d.admitted = Math.max(d.admitted, ev.createdTs);
    } else if (mine && op === "leave") {
      d.left = Math.max(d.left, ev.createdTs);
    } else continue;
    dates.set(body.channel_id, d);
  }
  return dates;
}

/** What a member removed from a circle is told when it tries to write there (the node's words). */
const YOU_WERE_REMOVED = "you were removed from this circle";

/** What /who and the message pane say an unverified mark means. */
export const UNVERIFIED_MEANING =
  "? = unverified: not signed by its author's key (a v1 client, or a hop that dropped the " +
  "signature); it may not be from who it says";

const keyAnnounce = (nodeId, { key, xKey }) => ({
  node_id: nodeId,
  pk: b64encode(key.publicKey),
  t: "KEY_ANNOUNCE",
  xpk: b64encode(xKey.publicKey),
});
const circleOwner = (salt) => ({ salt, t: "CIRCLE_OWNER" });
// Whether our own control events of a circle hold one of type t (written once per circle).
const wrote = (view, me, t, also = "") =>
  view.control.some((m) => m.authorNodeId === me && m.text.includes(`"t":"${t}"`) && m.text.includes(also));
// Whether an epoch's EPOCH_LINK is among a circle's control events (event text is key-sorted).
const linked = (view, epochId) =>
  view.control.some((m) => m.text.includes('"t":"EPOCH_LINK"') && m.text.includes(`"epoch_id":"${epochId}"`));

/** A key channel's key is kept here to read a private one: bounded, as the node bounds it. */
function checkTypedKey(key) {
  if (key.length > MAX_TYPED_KEY) throw new UserError(`a channel key is at most ${MAX_TYPED_KEY} characters`);
}

/** An event from the shared builder (lib/chatmodel.js); its refusal as a UserError. */
function built(build) {
  try {
    return build();
  } catch (e) {
    throw new UserError(e.message);
  }
}

/** Whether m is not covered by the read mark. */
function unreadBy(m, mark) {
  if (!mark) return true;
  if (m.createdTs > mark.ts) return true;
  if (m.createdTs < mark.ts - READ_WINDOW_S) return false;
  return !mark.ids.has(m.msgId);
}

/** Marks as stored (ids as arrays) to marks in memory (ids as Sets); anything else is dropped. */
function loadMarks(saved) {
  const marks = {};
  for (const [ch, mark] of Object.entries(saved || {})) {
    if (mark && typeof mark.ts === "number" && Array.isArray(mark.ids)) {
      marks[ch] = { ts: mark.ts, ids: new Set(mark.ids) };
    }
  }
  return marks;
}

/** One circle as the app holds it. */
class CircleView {
  constructor(circle) {
    this.circle = circle; // {circleId, secret, name, relayUrl, joinedTs}
    this.sync = null;
    this.messages = []; // chat messages (not __control), sorted by (createdTs, arrival)
    this.control = []; // __control messages, the input of derive()
    this.ids = new Set();
    // Arrival order, to break ties of createdTs (whole seconds): a reply sent
    // in the same second as the message it answers shows below it. Loaded
    // history arrives in the store's (createdTs, arrival) order.
    this.arrival = new Map(); // msgId -> n
    this.byTime = (a, b) =>
      a.createdTs - b.createdTs || this.arrival.get(a.msgId) - this.arrival.get(b.msgId);
    this._model = derive([], circle.circleId);
    this.pending = new Set(); // msgIds sent but not yet acknowledged by the relay
    this.marks = {}; // channelId -> {ts, ids: Set}: what was read (see READ_WINDOW_S)
    this.state = "connecting";
    this.peers = null; // other members registered at the relay (null: not asked yet)
    this.announced = null; // the promise of writing our key (and owner's proof) here, once
    this.version = 0; // bumped on every change the message pane must show
    this.partial = false; // only what the first render needs is loaded (AppState.loadRest)
  }

  get id() {
    return this.circle.circleId;
  }

  /** Drop the messages held (loadRest absorbs them again, whole and in order). */
  forget() {
    this.messages = [];
    this.control = [];
    this.ids = new Set();
    this.arrival = new Map();
    this.partial = false;
  }

  /** What the circle's control events say now (derived again once a held event falls due). */
  get model() {
    const now = Math.floor(Date.now() / 1000);
    if (this._model.dueAt !== null && now >= this._model.dueAt) this._model = this.derive(this.control, now);
    return this._model;
  }

  /** The circle's state from these control events (its secret decides its owner). */
  derive(control, now = Math.floor(Date.now() / 1000)) {
    return derive(control, this.id, now, this.circle.secret);
  }

  set model(state) {
    this._model = state;
  }
}

export class AppState extends EventTarget {
  constructor(store) {
    super();
    this.store = store;
    this.identity = null; // {nodeId, displayName, key}: one object, shared with every CircleSync
    this.relayUrl = ""; // the relay of circles created or joined by host:port code here
    this.circles = new Map(); // circleId -> CircleView, in join order
    this.current = { circleId: "", channelId: DEFAULT_CHANNEL };
    this.notices = []; // local lines for the current view: {ts, text, level}
    this.noticeSeq = 0; // bumped with every notice, so the pane knows to redraw
  }

  // ---- loading -------------------------------------------------------

  async load() {
    this.identity = (await this.store.getIdentity()) || null;
    if (this.identity && !(this.identity.key && this.identity.xKey)) {
      // An identity made before keys keeps its node id (an older id) and signs from now on;
      // one made before epochs gets its X25519 key, and announces again with it.
      this.identity.key ??= await generateKey();
      this.identity.xKey ??= await generateXKey();
      await this.store.putIdentity(this.identity);
    }
    this.relayUrl = (await this.store.getSetting(SETTING_RELAY)) || "";
    const circles = await this.store.circles();
    circles.sort((a, b) => (a.joinedTs || 0) - (b.joinedTs || 0));
    for (const circle of circles) this.circles.set(circle.circleId, new CircleView(circle));
    const cur = await this.store.getSetting(SETTING_CURRENT);
    const first = this.circles.keys().next().value || "";
    if (cur && this.circles.has(cur.circleId)) this.current = { ...cur };
    else this.current = { circleId: first, channelId: DEFAULT_CHANNEL };
    // What the first screen needs, no more: every circle's control events (channels, names,
    // roles) and the current channel's newest lines. loadRest() reads the rest after it.
    for (const view of this.circles.values()) {
      await this.loadHistory(view, view.id === this.current.circleId ? this.current.channelId : "");
    }
  }

  /**
   * After the first render: each circle's whole stored history (unread counts, other
   * channels), absorbed again in the store's order, with what arrived meanwhile after it.
   */
  async loadRest() {
    for (const view of this.circles.values()) {
      if (!view.partial) continue;
      const all = await this.store.messages(view.id);
      const stored = new Set(all.map((m) => m.msgId));
      const meanwhile = [...view.control, ...view.messages].filter((m) => !stored.has(m.msgId));
      view.forget();
      this.absorb(view, all);
      this.absorb(view, meanwhile);
    }
    performance.mark("felund:history-loaded"); // bench/web.py reads it
    this.changed();
  }

  /**
   * A circle's stored messages into its view: all of them, or with `tail` given (the first
   * render) only its control events and the newest TAIL_LINES of channel `tail` ("": none).
   */
  async loadHistory(view, tail) {
    view.partial = tail !== undefined;
    const msgs = !view.partial
      ? await this.store.messages(view.id)
      : [
          ...(await this.store.messages(view.id, { channelId: CONTROL_CHANNEL })),
          ...(tail ? await this.store.messages(view.id, { channelId: tail, limit: TAIL_LINES }) : []),
        ];
    this.absorb(view, msgs);
    const outbox = await this.store.outbox(view.id);
    view.pending = new Set(outbox.map((w) => w.msg_id || w.msgId));
    view.marks = loadMarks(await this.store.getSetting(readKey(view.id)));
  }

  /** Whether the browser has what it needs to chat (else the setup screen shows). */
  get ready() {
    return Boolean(this.identity && this.identity.displayName && this.circles.size > 0);
  }

  async setIdentityName(displayName) {
    if (!this.identity) {
      // A new identity's node id derives from its key: only that key signs for it.
      const key = await generateKey();
      this.identity = { nodeId: nodeIdOf(key.publicKey), displayName, key, xKey: await generateXKey() };
    } else {
      this.identity.displayName = displayName; // in place: the syncs hold this object
    }
    await this.store.putIdentity({ ...this.identity });
  }

  async setRelayUrl(url) {
    const base = normalizeRelayUrl(url);
    const old = this.relayUrl;
    this.relayUrl = base;
    await this.store.putSetting(SETTING_RELAY, base);
    // Circles that followed the old default move with it; a circle joined by
    // a relay URL in its invite code stays on that relay.
    for (const view of this.circles.values()) {
      if (view.circle.relayUrl === old && old !== base) {
        view.circle = { ...view.circle, relayUrl: base };
        await this.store.putCircle(view.circle);
        this.restartSync(view);
      }
    }
    this.changed();
  }

  // ---- syncing -------------------------------------------------------

  /** Whether our identity signs what it writes (an older id with the derived mark cannot). */
  get signs() {
    return Boolean(this.identity?.key && maySign(this.identity.key, this.identity.nodeId));
  }

  startAll() {
    for (const view of this.circles.values()) {
      this.startSync(view);
      this.announce(view).catch((e) => console.warn("felund: could not announce our key", e));
    }
    window.addEventListener("online", () => this.changed());
    window.addEventListener("offline", () => this.changed());
    // Leave the relay's presence list when the page goes, as the v1 browser client does.
    window.addEventListener("pagehide", () => {
      for (const view of this.circles.values()) {
        this.stopDirect(view);
        if (view.sync) view.sync.stop({ unregister: true });
      }
    });
    // Back from the back/forward cache: those syncs were stopped on pagehide.
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) for (const view of this.circles.values()) this.restartSync(view);
    });
  }

  startSync(view) {
    if (view.sync) return; // one sync per circle (setup starts the first before the app runs)
    const circleId = view.id;
    view.state = "connecting";
    view.sync = new CircleSync(this.store, {
      circle: view.circle,
      identity: this.identity,
      relayUrl: view.circle.relayUrl,
      onMessages: (msgs) => this.ingest(circleId, msgs),
      onState: (state) => this.syncState(circleId, state),
      onOutbox: (msgIds) => this.outboxChanged(circleId, msgIds),
      onPeers: (n) => this.peersChanged(circleId, n),
      onSent: (wire) => view.direct?.announce(wire),
    });
    view.sync.start();
    this.startDirect(view);
    this.followEpochs(view); // what loadHistory folded before the sync existed
  }

  /** Direct DataChannel links to the circle's other pages (ui/direct.js), where WebRTC exists. */
  startDirect(view) {
    if (typeof RTCPeerConnection === "undefined") return;
    const direct = new DirectLinks({ sync: view.sync });
    view.direct = direct;
    relayIceServers(view.circle.relayUrl).then((servers) => direct.useIceServers(servers), () => {});
  }

  stopDirect(view) {
    view.direct?.close();
    view.direct = null;
  }

  restartSync(view) {
    this.stopDirect(view);
    if (view.sync) view.sync.stop();
    view.sync = null;
    this.startSync(view);
  }

  syncState(circleId, state) {
    const view = this.circles.get(circleId);
    if (!view || view.state === state) return;
    view.state = state;
    this.changed();
  }

  peersChanged(circleId, n) {
    const view = this.circles.get(circleId);
    if (!view || view.peers === n) return;
    view.peers = n;
    view.version++;
    this.changed();
  }

  /** The connection state the header shows for the current circle. */
  connection() {
    if (!navigator.onLine) return "offline";
    const view = this.view();
    return view ? view.state : "connecting";
  }

  // ---- messages ------------------------------------------------------

  /** Add messages to a view; returns whether anything was new. Derives channels again if needed. */
  absorb(view, msgs) {
    let fresh = false;
    let control = false;
    let ordered = true;
    for (const m of msgs) {
      if (view.ids.has(m.msgId)) continue;
      view.ids.add(m.msgId);
      view.arrival.set(m.msgId, view.arrival.size);
      fresh = true;
      if (m.channelId === CONTROL_CHANNEL) {
        view.control.push(m);
        control = true;
      } else {
        const last = view.messages[view.messages.length - 1];
        if (last && last.createdTs > m.createdTs) ordered = false;
        view.messages.push(m);
      }
    }
    if (!ordered) view.messages.sort(view.byTime);
    if (control) {
      view.model = view.derive(view.control);
      this.followEpochs(view);
    }
    if (fresh) view.version += 1;
    return fresh;
  }

  /**
   * A fold to the circle's sync: it takes the winning chain and removals, unwraps
   * the secrets wrapped to us and opens what waited sealed for them (whose
   * messages come back through ingest, and are folded in turn).
   */
  followEpochs(view) {
    if (!view.sync) return;
    view.sync
      .follow(view.model)
      .then(() => this.rekeyDue(view))
      .catch((e) => console.warn("felund: could not follow the circle's epochs", e));
  }

  /**
   * What re-key is ours to write (as the node's store does): the EPOCH_LINK of an
   * epoch of ours that lacks it (the page closed between the two: crash-only), and,
   * as owner or moderator holding the newest secret, the next epoch for removals a
   * losing branch made that the winner does not cover. One at a time per circle.
   */
  async rekeyDue(view) {
    const me = this.identity.nodeId;
    const state = view.model;
    if (view.rekeying || state.removed.has(me) || !this.signs) return;
    view.rekeying = true;
    try {
      const held = view.sync.keys.held;
      for (const e of state.epochEvents.values()) {
        if (e.author !== me || linked(view, e.epochId)) continue;
        if (held.has(e.epochId) && held.has(e.parent)) await this.linkEpoch(view, held.get(e.epochId), held.get(e.parent));
      }
      if (state.uncovered.size && state.moderates(me) && view.sync.keys.holdsWinner()) {
        await this.rekey(view, nextRemoved(state));
      }
      // A private invite channel's next epoch, as the node's store writes it (channelkeys.rekeys_due).
      if (view.sync.keys.holdsWinner()) {
        for (const cid of await rekeysDue(view.model, me)) await this.channelEpoch(view, cid);
      }
    } finally {
      view.rekeying = false;
    }
  }

  /**
   * A private invite channel's next epoch: a fresh secret wrapped to each of its members
   * that can unwrap it (us included), written under the circle's newest epoch, kept here.
   */
  async channelEpoch(view, channelId) {
    const channel = view.model.channels.get(channelId);
    const tip = channel.keys.length ? channel.keys[channel.keys.length - 1] : null;
    const n = tip ? tip.n + 1 : 1;
    const secret = newSecret();
    const slot = await view.sync.nextControl();
    const wraps = {};
    for (const [nodeId, xpk] of await recipients(view.model, channel)) {
      const context = channelWrapContext(view.id, channelId, slot.msgId, nodeId);
      wraps[nodeId] = await wrap(hexToBytes(secret), xpk, context);
    }
    await this.control(view, built(() => channelKeyEvent(channelId, n, tip ? tip.epochId : "", wraps)), { slot });
    await view.sync.holdParts([{ channelId, part: invitePart(n, slot.msgId), secret }]);
  }

  /** The EPOCH_LINK of an epoch: its parent's secret, sealed under the epoch itself. */
  async linkEpoch(view, epoch, parent) {
    await this.control(view, built(() => epochLinkEvent(epoch.epochId, parent.secret)), { epoch });
  }

  ingest(circleId, msgs) {
    const view = this.circles.get(circleId);
    if (!view || !msgs || !msgs.length) return;
    // onMessages brings only others' messages: someone meets us at this relay after all.
    if (!view.peers) view.peers = null;
    if (!this.absorb(view, msgs)) return;
    if (circleId === this.current.circleId && document.visibilityState === "visible") {
      this.markRead(circleId, this.current.channelId);
    }
    // Others' new messages, for what reacts to arrivals (desktop notifications of mentions).
    this.dispatchEvent(new CustomEvent("arrived", { detail: { view, msgs } }));
    this.changed();
  }

  /** Post a chat message to the current channel; it shows at once, marked pending. */
  async send(text) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    this.mayWrite(view);
    const channelId = this.current.channelId;
    if (!view.model.canPost(channelId, this.identity.nodeId)) {
      throw new UserError(`you are not a member of #${channelId}`);
    }
    // A private channel's messages go under its channel key, never under the circle's alone.
    const channel = view.model.channels.get(channelId);
    const seal = channel?.private ? await view.sync.keys.channelSeal(channel) : null;
    if (channel?.private && seal === null) throw new UserError(cannotSeal(channel));
    await this.withPending(view, () => view.sync.send(channelId, text, seal));
  }

  /**
   * Write one control event of ours into a circle (channel create/join, names),
   * if the chat model accepts it: folded first with the circle's events, as
   * the node does (felund/store/ops.py Ops._control), so a refused event is
   * never sent.
   * @throws {UserError} with the chat model's reason
   */
  async control(view, event, { slot, epoch } = {}) {
    this.mayWrite(view);
    slot ??= await view.sync.nextControl();
    const me = this.identity.nodeId;
    const mine = {
      msgId: slot.msgId,
      authorNodeId: me,
      createdTs: slot.createdTs,
      text: eventText(dated(event, slot.createdTs)),
      signer: this.signs ? b64encode(this.identity.key.publicKey) : null,
    };
    const problem =
      writerProblem(view.model, event, me) || view.derive([...view.control, mine]).refused.get(mine.msgId);
    if (problem === "not_allowed") throw new UserError(whoCan(view.model, event, this.names(view)));
    if (problem) throw new UserError(REFUSALS[problem] || `refused: ${problem}`);
    await this.withPending(view, () => view.sync.sendControl(event, slot, epoch));
  }

  /** A member the circle removed writes nothing there (the node refuses as much). */
  mayWrite(view) {
    if (view.model.removed.has(this.identity.nodeId)) throw new UserError(YOU_WERE_REMOVED);
  }

  /**
   * Our keys into a circle (KEY_ANNOUNCE), and the owner's proof of a circle
   * made here (CIRCLE_OWNER), each once: what the store holds says whether it
   * is written, so a reload between creating and writing still writes it.
   * Once per view: setup and startAll may both ask.
   */
  announce(view) {
    view.announced ??= this._announce(view);
    return view.announced;
  }

  async _announce(view) {
    if (!this.signs) return;
    const me = this.identity.nodeId;
    if (view.circle.ownerSalt && !wrote(view, me, "CIRCLE_OWNER")) {
      await this.control(view, circleOwner(view.circle.ownerSalt));
    }
    // Again if ours lacked the X25519 key (written before epochs): members wrap to it.
    const xpk = `"xpk":"${b64encode(this.identity.xKey.publicKey)}"`;
    if (!wrote(view, me, "KEY_ANNOUNCE", xpk)) await this.control(view, keyAnnounce(me, this.identity));
  }

  async withPending(view, post) {
    const msg = await post(); // stored at once, pending until the relay acknowledges
    if (msg.pending) view.pending.add(msg.msgId);
    this.absorb(view, [msg]);
    view.version += 1;
    if (view.id === this.current.circleId) this.markRead(view.id, this.current.channelId);
    this.changed();
    return msg;
  }

  /** The sync's outbox changed: these msgIds still wait for the relay. */
  outboxChanged(circleId, msgIds) {
    const view = this.circles.get(circleId);
    if (!view) return;
    view.pending = new Set(msgIds);
    view.version += 1;
    this.changed();
  }

  // ---- circles -------------------------------------------------------

  view(circleId = this.current.circleId) {
    return this.circles.get(circleId) || null;
  }

  circleName(view) {
    return view.model.name || view.circle.name || `circle ${view.id.slice(0, 8)}`;
  }

  /** Add a circle and start syncing it; `firstEvents` are control events written before. */
  async addCircle(circle, firstEvents = []) {
    await this.store.putCircle(circle);
    const view = new CircleView(circle);
    this.circles.set(view.id, view);
    await this.loadHistory(view); // messages stored before (none for a new circle)
    // The sync posts only once registered, so events of a brand-new circle
    // may be written right away: the relay has its signing key by then.
    this.startSync(view);
    await this.announce(view);
    for (const event of firstEvents) await this.control(view, event);
    await this.setCurrent(view.id, DEFAULT_CHANNEL);
    return view;
  }

  /**
   * A new circle; its invite code names this circle's relay as the peer. Its
   * secret commits to our key (trust.newOwnedSecret), so every member can
   * check that we own it once our signed CIRCLE_OWNER shows the salt.
   */
  async createCircle(name) {
    if (!this.relayUrl) throw new UserError("set a relay URL first (F3 settings)");
    const owned = this.signs
      ? newOwnedSecret(this.identity.key.publicKey)
      : { secret: newSecret(), salt: "" };
    const circleId = await circleIdOf(owned.secret);
    const named = name ? [circleNameEvent(circleId, name)] : [];
    const joinedTs = Math.floor(Date.now() / 1000);
    const circle = { circleId, secret: owned.secret, name, relayUrl: this.relayUrl, joinedTs };
    // The salt is kept until the proof is written (it is public once written).
    if (owned.salt) circle.ownerSalt = owned.salt;
    return this.addCircle(circle, named);
  }

  /**
   * Join by invite code. A browser's code names its relay (a URL): the
   * circle is synced there. A node's code names host:port, which a page
   * cannot reach (no TCP): the circle is synced through our own relay
   * instead; the code carries the secret, and the node meets us there if
   * it has the same relay configured. Throws InviteError for a bad code.
   */
  async joinCircle(code) {
    const invite = decodeInvite(code.trim());
    // A code of epoch n > 0 names its circle; its secret is that epoch's, and the root
    // (circles.secret, "" until then) comes back through the EPOCH_LINKs.
    const epoch = invite.epoch ? { n: invite.epoch, epochId: invite.epochId, secret: invite.secret } : null;
    const circleId = epoch ? invite.circleId : await circleIdOf(invite.secret);
    if (this.circles.has(circleId)) {
      const view = this.circles.get(circleId);
      // A member a re-key left behind (a client that could not follow) is back in with it.
      if (epoch) await (view.sync ? view.sync.hold([epoch]) : this.store.putEpoch(circleId, epoch));
      await this.setCurrent(circleId, DEFAULT_CHANNEL);
      return { view, joined: false };
    }
    const relayUrl = isUrlPeer(invite.peer) ? normalizeRelayUrl(invite.peer) : this.relayUrl;
    if (!relayUrl) throw new UserError("set a relay URL first (F3 settings)");
    if (epoch) await this.store.putEpoch(circleId, epoch); // before the sync starts: it reads them
    const view = await this.addCircle({
      circleId,
      secret: epoch ? "" : invite.secret,
      name: "",
      relayUrl,
      joinedTs: Math.floor(Date.now() / 1000),
      // A node's host:port: the pane says it must use this relay before anything can arrive.
      invitedBy: isUrlPeer(invite.peer) ? "" : invite.peer,
    });
    return { view, joined: true };
  }

  /** The code of the newest epoch held (after a re-key the root's code admits nobody). */
  inviteCode(view) {
    const newest = view.sync?.keys.newest();
    if (!newest || newest.n === 0) return encodeInvite(view.circle.secret, view.circle.relayUrl);
    const { n: epoch, epochId, secret } = newest;
    return encodeInvite(secret, view.circle.relayUrl, { circleId: view.id, epoch, epochId });
  }

  async renameCircle(name) {
    const view = this.view();
    if (!view) throw new UserError("no circle to name");
    await this.control(view, circleNameEvent(view.id, name));
  }

  async leaveCircle() {
    const view = this.view();
    if (!view) throw new UserError("no circle to leave");
    this.stopDirect(view);
    if (view.sync) view.sync.stop({ unregister: true });
    await this.store.deleteCircle(view.id);
    this.circles.delete(view.id);
    const next = this.circles.keys().next().value || "";
    await this.setCurrent(next, DEFAULT_CHANNEL);
    return view;
  }

  /** Change our display name: kept locally and announced in every circle, like `felund rename`. */
  async rename(name) {
    await this.setIdentityName(name);
    for (const view of this.circles.values()) {
      await this.control(view, renameEvent(view.id, this.identity.nodeId, name));
    }
  }

  // ---- channels ------------------------------------------------------

  /** Channels to list: general first, then those we may post in or read, then by name. */
  channels(view) {
    const me = this.identity ? this.identity.nodeId : "";
    const ids = new Set([DEFAULT_CHANNEL]);
    const dates = membershipDates(view.control, me);
    const left = (id) => (dates.get(id)?.left ?? 0) > (dates.get(id)?.admitted ?? 0);
    for (const [id, ch] of view.model.channels) {
      if (ch.members.has(me) || (ch.accessMode === "public" && !left(id))) ids.add(id);
    }
    // A channel someone wrote in without a create event (an older client) still shows.
    for (const m of view.messages) {
      if (!view.model.channels.has(m.channelId) && !left(m.channelId)) ids.add(m.channelId);
    }
    return [...ids].sort((a, b) =>
      a === DEFAULT_CHANNEL ? -1 : b === DEFAULT_CHANNEL ? 1 : a.localeCompare(b),
    );
  }

  /**
   * The people of a circle (or of one channel): whoever wrote in it, by their
   * latest name, most recently seen first; as the node's store.who answers.
   * Each with its role, and whether any of its messages verified (signed by its key).
   */
  people(view, channelId = "") {
    const seen = new Map(); // nodeId -> {nodeId, displayName, lastSeen, verified, role}
    for (const m of view.messages.concat(view.control)) {
      const p = seen.get(m.authorNodeId);
      const verified = Boolean(m.verified) || Boolean(p && p.verified);
      if (!p || m.createdTs >= p.lastSeen) {
        const { authorNodeId: nodeId, displayName, createdTs: lastSeen } = m;
        seen.set(nodeId, { nodeId, displayName, lastSeen, verified });
      } else {
        p.verified = verified;
      }
    }
    let people = [...seen.values()];
    for (const p of people) {
      p.displayName = view.model.names.get(p.nodeId) || p.displayName;
      p.role = view.model.removed.has(p.nodeId) ? "removed" : view.model.roleOf(p.nodeId);
    }
    if (channelId && channelId !== DEFAULT_CHANNEL) {
      const channel = view.model.channels.get(channelId);
      if (!channel) throw new UserError(`there is no channel #${channelId}`);
      people = people.filter((p) => channel.members.has(p.nodeId));
    }
    return people.sort((a, b) => b.lastSeen - a.lastSeen);
  }

  /**
   * Create a channel and go there, as `felund channel create`: a key or invite one is
   * private (its messages sealed under its own key) unless shared; a private key
   * channel's key is kept here (IndexedDB, never shown) to read and write it.
   * @param {string} channelId
   * @param {{access?: string, key?: string, shared?: boolean}} [how]
   */
  async createChannel(channelId, { access = "public", key = "", shared = false } = {}) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    if (view.model.channels.has(channelId)) throw new UserError(`#${channelId} exists already`);
    checkTypedKey(key);
    const made = this.channelEvent(view, "create", channelId, { access, key });
    const event = access !== "public" && !shared ? built(() => madePrivate(made)) : made;
    // Its channel epochs are signed events: a page that cannot sign could never write in it.
    if (event.private && !this.signs) throw new UserError(REFUSALS.unsigned);
    await this.control(view, event);
    if (event.private && access === "key") await view.sync.holdParts([{ channelId, part: KEY_PART, secret: key }]);
    await this.setCurrent(view.id, channelId);
  }

  /**
   * The members of the current circle who could not read a private channel: a client
   * with no X25519 key announced (they would not read it, even as members). Names.
   * @returns {string[]}
   */
  cannotReadPrivate() {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    const names = this.names(view);
    const me = this.identity.nodeId;
    return cannotFollow(view.model, names.keys())
      .filter((id) => id !== me)
      .map((id) => names.get(id) || id.slice(0, 8));
  }

  /**
   * Join a channel, as `felund channel join NAME [--key KEY]`: a public one
   * needs nothing, a key channel the key (only its hash is written), an
   * invite channel an approval. Goes there once joined.
   * @throws {UserError} with the chat model's reason (no such channel, wrong key…)
   */
  async joinChannel(channelId, key = "") {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    const channel = view.model.channels.get(channelId);
    checkTypedKey(key);
    await this.control(view, this.channelEvent(view, "join", channelId, { key }));
    // A key channel's key is kept (IndexedDB, never shown): it reads and writes a private one.
    if (key && channel?.accessMode === "key" && (!channel.keyHash || channel.keyHash === keyHash(view.id, channelId, key))) {
      await view.sync.holdParts([{ channelId, part: KEY_PART, secret: key }]);
    }
    await this.setCurrent(view.id, channelId);
  }

  /**
   * Leave a channel, as `felund channel leave`: it is listed no more, nor counted unread,
   * and a private invite channel's next key (its creator's or a moderator's) leaves us out.
   */
  async leaveChannel(channelId) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    const me = this.identity.nodeId;
    const channel = view.model.channels.get(channelId);
    // A public channel is listed without a join: leaving it takes it off the list.
    if (channel && channel.accessMode !== "public" && !channel.members.has(me)) {
      throw new UserError(`you are not in #${channelId}`);
    }
    // After the event that let us in (the fold applies events by date): its writer's
    // clock may run a few seconds ahead of ours, as the node's store allows for.
    let slot = await view.sync.nextControl();
    const after = (membershipDates(view.control, me).get(channelId)?.admitted ?? 0) + 1;
    if (slot.createdTs < after) slot = { createdTs: after, msgId: await newMsgId(me, after) };
    await this.control(view, this.channelEvent(view, "leave", channelId), { slot });
    if (this.current.circleId === view.id && this.current.channelId === channelId) {
      await this.setCurrent(view.id, DEFAULT_CHANNEL);
    }
  }

  /** Ask to join an invite channel; a member approves (/channel approve). */
  async requestChannel(channelId) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    const channel = view.model.channels.get(channelId);
    if (!channel) throw new UserError(`there is no channel #${channelId}`);
    if (channel.accessMode !== "invite") {
      throw new UserError(`#${channelId} is not invite-only: /channel join ${channelId}`);
    }
    await this.control(view, this.channelEvent(view, "request", channelId));
  }

  /** Let someone into an invite channel. */
  async approve(channelId, who) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    if (!view.model.channels.has(channelId)) throw new UserError(`there is no channel #${channelId}`);
    const target = this.person(view, who);
    await this.control(view, this.channelEvent(view, "approve", channelId, { target }));
  }

  /**
   * The owner makes someone a "moderator" or a "member" again, as `felund role`.
   * A demotion also approves again whom only the demoted one let into a
   * channel, and restores the circle's name if only they set it
   * (keptByOwner, as the node's store does), so nobody loses access by surprise.
   */
  async setRole(who, role) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    const target = this.person(view, who);
    const before = view.model;
    await this.control(view, built(() => roleEvent(target, role)));
    if (role !== "member") return;
    for (const kept of keptByOwner(before, view.model, view.id, this.identity.nodeId)) {
      await this.control(view, kept);
    }
  }

  /**
   * What /kick PERSON would do, checked before the question is asked: whom the
   * new epoch removes (with what a losing branch left uncovered) and who cannot
   * follow the new key (no X25519 key announced: they need a new invite code).
   * @throws {UserError} the node's sentence saying who can, or why not
   */
  kickPlan(who) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    this.mayWrite(view);
    const state = view.model;
    const target = this.person(view, who);
    const names = this.names(view);
    const event = { t: "EPOCH_EVT", removed: nextRemoved(state, target) };
    const problem = writerProblem(state, event, this.identity.nodeId);
    if (problem === "not_allowed") throw new UserError(whoCan(state, event, names));
    if (problem) throw new UserError(REMOVAL_REFUSALS[problem] || `refused: ${problem}`);
    if (!view.sync.keys.holdsWinner()) {
      throw new UserError("this browser does not hold the circle's newest key yet: try again once it has caught up");
    }
    const nameOf = (id) => names.get(id) || id.slice(0, 8);
    const cannot = cannotFollow(state, names.keys()).filter((id) => id !== target);
    return { view, target, removed: event.removed, name: nameOf(target), cannot: cannot.map(nameOf) };
  }

  /**
   * Remove a member, as kickPlan said (after the user's yes): a new epoch (rekey).
   * @returns {Promise<number>} the new epoch's n
   */
  async kick(plan) {
    const { view } = plan;
    if (view.rekeying) throw new UserError("this circle is being given a new key: try again in a moment");
    view.rekeying = true;
    try {
      return await this.rekey(view, plan.removed);
    } finally {
      view.rekeying = false;
    }
  }

  /**
   * Start the next epoch removing `removed` (cumulative, nextRemoved): its fresh secret
   * wrapped to every member with a key but the removed (us included), the EPOCH_EVT
   * sealed under the epoch before it, then its EPOCH_LINK under the new one.
   * @returns {Promise<number>} the new epoch's n
   */
  async rekey(view, removed) {
    const state = view.model;
    const parent = view.sync.keys.newest();
    const n = parent.n + 1;
    const secret = newSecret();
    const slot = await view.sync.nextControl();
    const wraps = {};
    for (const [nodeId, xpk] of state.xkeys) {
      if (removed.includes(nodeId)) continue;
      try {
        wraps[nodeId] = await wrap(hexToBytes(secret), xpk, wrapContext(view.id, slot.msgId, nodeId));
      } catch (e) {
        // A key no secret can be wrapped to (a low-order point): that member cannot follow,
        // and must not stop the removal.
        if (!(e instanceof TypeError)) throw e;
      }
    }
    const event = built(() => epochEvent(n, parent.epochId, removed, wraps));
    await this.control(view, event, { slot, epoch: parent });
    const epoch = { n, epochId: slot.msgId, secret };
    await view.sync.hold([epoch]);
    await this.linkEpoch(view, epoch, parent);
    return n;
  }

  /** The node `who` names in a circle: by node id, its start, or name, as the node resolves them. */
  person(view, who) {
    const people = this.people(view).map((p) => [p.nodeId, p.displayName]);
    return built(() => resolvePerson(people, who));
  }

  /** The people's names as /who shows them: Map node id -> latest name. */
  names(view) {
    return new Map(this.people(view).map((p) => [p.nodeId, p.displayName]));
  }

  /** A CHANNEL_EVT of ours, from the builder the node's `felund channel` uses too. */
  channelEvent(view, op, channelId, what = {}) {
    return built(() => channelEvent(op, view.id, channelId, this.identity.nodeId, what));
  }

  async switchChannel(channelId) {
    const view = this.view();
    if (!view) throw new UserError("join or create a circle first");
    if (!this.channels(view).includes(channelId)) {
      throw new UserError(`no channel #${channelId} here (/channels lists them)`);
    }
    await this.setCurrent(view.id, channelId);
  }

  /** Next/previous channel of the current circle (Alt+Down/Up), wrapping into other circles. */
  async stepChannel(delta) {
    const flat = [];
    for (const view of this.circles.values()) {
      for (const ch of this.channels(view)) flat.push([view.id, ch]);
    }
    if (!flat.length) return;
    const at = flat.findIndex(
      ([c, ch]) => c === this.current.circleId && ch === this.current.channelId,
    );
    const [c, ch] = flat[(at + delta + flat.length) % flat.length];
    await this.setCurrent(c, ch);
  }

  // ---- view and unread -----------------------------------------------

  async setCurrent(circleId, channelId) {
    const changed = circleId !== this.current.circleId || channelId !== this.current.channelId;
    this.current = { circleId, channelId };
    if (changed) {
      this.notices = [];
      this.noticeSeq += 1;
    }
    await this.store.putSetting(SETTING_CURRENT, { ...this.current });
    if (circleId) this.markRead(circleId, channelId);
    this.changed();
  }

  /** Unread counts of a circle: Map channelId -> count (messages of others after the mark). */
  unread(view) {
    const me = this.identity ? this.identity.nodeId : "";
    const counts = new Map();
    for (const m of view.messages) {
      if (m.authorNodeId === me || !unreadBy(m, view.marks[m.channelId])) continue;
      counts.set(m.channelId, (counts.get(m.channelId) || 0) + 1);
    }
    return counts;
  }

  markRead(circleId, channelId) {
    const view = this.circles.get(circleId);
    if (!view) return;
    const mark = view.marks[channelId];
    const msgs = view.messages.filter((m) => m.channelId === channelId);
    if (!msgs.length || !msgs.some((m) => unreadBy(m, mark))) return;
    const ts = msgs[msgs.length - 1].createdTs;
    const ids = new Set(msgs.filter((m) => m.createdTs >= ts - READ_WINDOW_S).map((m) => m.msgId));
    view.marks = { ...view.marks, [channelId]: { ts, ids } };
    // Persisted so a reload does not count read messages again; failures only cost a recount.
    const saved = {};
    for (const [ch, mk] of Object.entries(view.marks)) saved[ch] = { ts: mk.ts, ids: [...mk.ids] };
    this.store.putSetting(readKey(circleId), saved).catch(() => {});
  }

  // ---- notices -------------------------------------------------------

  /** A local line in the message pane (command output, errors); gone when the view changes. */
  notice(text, level = "info") {
    this.notices.push({ ts: Math.floor(Date.now() / 1000), text, level });
    if (this.notices.length > 50) this.notices.shift();
    this.noticeSeq += 1;
    this.changed(level === "error" ? "error" : "notice");
  }

  changed(what = "state") {
    this.dispatchEvent(new CustomEvent("change", { detail: what }));
  }
}

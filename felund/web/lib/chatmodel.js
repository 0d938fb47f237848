// Circles, channels and people, derived from control events: a port of
// felund/v1/chatmodel.py (the fold) and felund/v1/events.py (the builder, and
// people named by id, its start or name), with the same rules and the same
// results, so that a browser and a Python node holding the same events derive
// the same state and write the same events. The rules are stated there; in short:
// - an event dated more than MAX_SKEW_S after now is held (changes nothing);
// - due events apply in (createdTs, eventHash) order;
// - a channel is made by its valid create (a signed one first) with the smallest hash, whatever the dates;
// - an event refused for want of another (no channel, not approved) waits,
//   and applies as soon as an event gives what it needs.
// Roles (SPEC-15 §3): each event carries `signer`, the base64 key its author
// signed it with (null: unsigned, a v1 writer's), and the fold is given the
// circle's secret for the owner's proof:
// - owner: the author of a signed CIRCLE_OWNER whose salt and key the circle
//   secret commits to (trust.provesOwner); none without one (a v1 circle);
// - moderators: ROLE_EVT grant/revoke signed by the owner, per target the last
//   in (createdTs, hash) order; owner and moderators are known before the
//   channel fold, which uses them (only the owner writes role events);
// - in a circle with an owner, CIRCLE_NAME_EVT counts only when signed by the
//   owner or a moderator; an approve counts only when signed by the channel's
//   creator, the owner or a moderator;
// - unsigned events never grant or use a role, and an unsigned event whose
//   author has a signed one in this circle is ignored (it cannot be told from
//   a forgery); among creates of one channel a signed one beats an unsigned one.
// Epochs (issue 16), from signed events only:
// - an EPOCH_EVT is sound when signed by the owner or by someone the owner made
//   moderator, its removed (cumulative, sorted) holds its parent's and never the
//   owner, only the owner's new removals hold a moderator, its author is not in
//   its parent's removed, and its parent is a sound EPOCH_EVT of the epoch before
//   ("" for epoch 1); a sound one counts when its author is the owner or a
//   moderator now whom no epoch of the owner's removes, or a counting one is
//   built on it (a demotion or removal undoes nothing built on);
// - epoch n's winner: among the valid ones whose parent is epoch n-1's winner,
//   the smallest msgId; removed is the newest winner's, and a losing branch's
//   removals are uncovered until a later epoch covers them;
// - xkeys: the xpk of each author of a signed KEY_ANNOUNCE whose pk is its
//   signer (the last in order); EPOCH_LINK is the store's and derives nothing.
// Private channels (issue 16, second half):
// - a create of a key or invite channel with "private": true makes it private
//   (its messages sealed under a channel key; the other implementation ignores it);
// - a CHANNEL_KEY_EVT of an invite channel counts when signed by its creator, the
//   owner or a moderator; each channel's chain is picked by the winner rule of
//   the circle's epochs (winningChain serves both).

import { b64decode, b64encode, cmpCodePoints, cpLength } from "./bytes.js";
import { MSG_ID_LEN, isHex, isNodeId } from "./ids.js";
import { isPrintable, pyStrip } from "./invite.js";
import { dumps, isInt, isObject, loads } from "./pyjson.js";
import { sha256HexOf } from "./sha256.js";
import { SALT_HEX_LEN, isDerivedForm, provesOwner, unb64 } from "./trust.js";
import { DEFAULT_CHANNEL, MAX_TEXT } from "./wire.js";

export const ACCESS_MODES = Object.freeze(["public", "key", "invite"]);
export const CHANNEL_OPS = Object.freeze(["create", "join", "request", "approve", "leave", "rename"]);
export const MAX_EVENT_TEXT = 4096;
export const MAX_NAME = 64;
export const MAX_SKEW_S = 300;
// An EPOCH_EVT carries a wrap per member: it may be as long as any message.
export const MAX_EPOCH_TEXT = MAX_TEXT;
export const MAX_EPOCH = 2 ** 31;
export const MAX_REMOVED = 256;
export const MAX_WRAPS = 256;
export const MAX_WRAP_CHARS = 128;
export const X_KEY_LEN = 32;
// What our writers say when they refuse a removal (whoCan says who may remove).
export const REMOVAL_REFUSALS = Object.freeze({
  removes_owner: "the owner cannot be removed",
  removes_self: "you cannot remove yourself: leave the circle instead",
  already_removed: "already removed from this circle",
  removes_moderator: "only the circle's owner removes a moderator",
});
export const CHANNEL_RULE = "channel names are 1 to 32 of a-z, 0-9, - and _, not starting with __";
export const NEEDS_KEY = "a key channel needs a key";
const CHANNEL_RE = /^[a-z0-9_-]{1,32}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;
// Ops whose node_id, when present, names the actor (v1 writes it so, addendum §2.3).
const NODE_ID_IS_ACTOR = new Set(["join", "request", "leave", "rename"]);
const WAIT_REASONS = { channel: "no_channel", approved: "not_approved" };
export const ROLE_OPS = Object.freeze(["grant", "revoke"]);
export const ROLES = Object.freeze(["owner", "moderator", "member"]);
// Known, and about nothing the fold derives.
const NO_EFFECT = new Set(["ANCHOR_ANNOUNCE", "CALL_EVT", "KEY_ANNOUNCE", "EPOCH_LINK"]);
// Folded by their own functions: before the channels, and channel keys after them.
const NOT_CHANNEL_KINDS = new Set(["epoch", "xkey", "chan_key"]);
// Events whose text may be as long as a message: they carry a wrap per member.
const WRAPPING = new Set(["EPOCH_EVT", "CHANNEL_KEY_EVT"]);

/**
 * Whether name is a channel a user may make, join or post in.
 * @param {any} name
 * @returns {boolean}
 */
export function isChannelName(name) {
  return typeof name === "string" && CHANNEL_RE.test(name) && !name.startsWith("__");
}

/**
 * A channel's name as typed (one leading # allowed).
 * @param {string} word
 * @returns {string}
 * @throws {Error} with CHANNEL_RULE
 */
export function channelName(word) {
  const name = word.startsWith("#") ? word.slice(1) : word;
  if (!isChannelName(name)) throw new Error(CHANNEL_RULE);
  return name;
}

/**
 * The hash of a channel key that control events carry: SHA-256 of
 * `circle_id|channel_id|key` (addendum §2.1), never the key itself.
 * @param {string} circleId
 * @param {string} channelId
 * @param {string} key
 * @returns {string}
 */
export function keyHash(circleId, channelId, key) {
  return sha256HexOf(`${circleId}|${channelId}|${key}`);
}

/**
 * The text of a control message: compact, key-sorted JSON, non-ASCII kept (as Python writes it).
 * @param {object} event
 * @returns {string}
 */
export function eventText(event) {
  return dumps(event, { sortKeys: true, ensureAscii: false });
}

/**
 * @typedef {object} ControlEvent a control message as the store holds it
 * @property {string} msgId
 * @property {string} authorNodeId
 * @property {number} createdTs
 * @property {string} text
 * @property {string|null} [signer] the base64 key that signed it (null or absent: unsigned)
 */

/**
 * The value ties break on: hex SHA-256 of `msg_id|author|created_ts|text`.
 * @param {ControlEvent} ev
 * @returns {string}
 */
export function eventHash(ev) {
  return sha256HexOf(`${ev.msgId}|${ev.authorNodeId}|${ev.createdTs}|${ev.text}`);
}

/**
 * @typedef {object} Channel
 * @property {string} channelId
 * @property {string} accessMode public | key | invite
 * @property {string} keyHash "" unless accessMode is key (and "" there too for a v1 TUI's)
 * @property {string} creator node id ("" for general)
 * @property {number} createdTs
 * @property {Set<string>} members
 * @property {Set<string>} approved
 * @property {Set<string>} requests
 */

function newChannel(
  channelId,
  accessMode = "public",
  hash = "",
  creator = "",
  createdTs = 0,
  members = [],
  isPrivate = false,
) {
  return {
    channelId,
    accessMode,
    keyHash: hash,
    creator,
    createdTs,
    members: new Set(members),
    approved: new Set(),
    requests: new Set(),
    private: isPrivate, // sealed under a channel key (a key or invite channel made so)
    keys: [], // the winning chain of its CHANNEL_KEY_EVTs, epoch 1 first
  };
}

/** What a circle's control events say. */
export class CircleState {
  /** @param {string} [circleId] */
  constructor(circleId = "") {
    /** @type {string} */
    this.circleId = circleId;
    /** @type {string} the circle's friendly name ("" when none was set) */
    this.name = "";
    /** @type {Map<string, Channel>} */
    this.channels = new Map([[DEFAULT_CHANNEL, newChannel(DEFAULT_CHANNEL)]]);
    /** @type {Map<string, string>} node id -> display name */
    this.names = new Map();
    /** @type {Map<string, number>} refusal reason -> count */
    this.rejected = new Map();
    /** @type {Map<string, string>} msgId -> why it was refused (held: "future") */
    this.refused = new Map();
    /** @type {number|null} when the earliest held event falls due (derive again then) */
    this.dueAt = null;
    /** @type {string} the owner's node id ("" in a circle without an owner's proof) */
    this.owner = "";
    /** @type {Set<string>} */
    this.moderators = new Set();
    /** @type {Epoch[]} the winning chain, epoch 1 first */
    this.epochs = [];
    /** @type {Set<string>} the newest winner's removed */
    this.removed = new Set();
    /** @type {Set<string>} removals of losing branches no winner holds */
    this.uncovered = new Set();
    /** @type {Map<string, Uint8Array>} node id -> X25519 public key */
    this.xkeys = new Map();
    /** @type {Map<string, Epoch>} every valid EPOCH_EVT, any branch, by its id */
    this.epochEvents = new Map();
    /** @type {Map<string, object>} every valid CHANNEL_KEY_EVT, any channel and branch, by its id */
    this.channelKeys = new Map();
  }

  /**
   * A node's role in the circle.
   * @param {string} nodeId
   * @returns {"owner"|"moderator"|"member"}
   */
  roleOf(nodeId) {
    if (nodeId && nodeId === this.owner) return "owner";
    return this.moderators.has(nodeId) ? "moderator" : "member";
  }

  /** Whether nodeId is the circle's owner or one of its moderators. */
  moderates(nodeId) {
    return this.roleOf(nodeId) !== "member";
  }

  /**
   * Whether nodeId may post in channelId.
   * @param {string} channelId
   * @param {string} nodeId
   * @returns {boolean}
   */
  canPost(channelId, nodeId) {
    if (channelId === DEFAULT_CHANNEL) return true;
    const channel = this.channels.get(channelId);
    if (channel === undefined) return false;
    return channel.accessMode === "public" || channel.members.has(nodeId);
  }

  /**
   * The state as plain data, shaped and ordered as felund.v1.chatmodel.CircleState.summary().
   * @returns {object}
   */
  summary() {
    const sorted = (it) => [...it].sort(cmpCodePoints);
    const names = {};
    for (const id of sorted(this.names.keys())) names[id] = this.names.get(id);
    const channels = {};
    for (const id of sorted(this.channels.keys())) {
      const c = this.channels.get(id);
      channels[id] = {
        access_mode: c.accessMode,
        key_hash: c.keyHash,
        creator: c.creator,
        created_ts: c.createdTs,
        members: sorted(c.members),
        approved: sorted(c.approved),
        requests: sorted(c.requests),
        private: c.private,
        keys: c.keys.map((k) => k.epochId),
      };
    }
    const xkeys = {};
    for (const id of sorted(this.xkeys.keys())) xkeys[id] = b64encode(this.xkeys.get(id));
    return {
      name: this.name,
      names,
      channels,
      owner: this.owner,
      moderators: sorted(this.moderators),
      epochs: this.epochs.map(epochSummary),
      removed: sorted(this.removed),
      uncovered: sorted(this.uncovered),
      xkeys,
      epoch_events: sorted(this.epochEvents.keys()),
      channel_keys: sorted(this.channelKeys.keys()),
    };
  }
}

/**
 * @typedef {object} Epoch a valid EPOCH_EVT (felund/v1/chatmodel.py Epoch)
 * @property {number} n
 * @property {string} epochId the EPOCH_EVT's msgId
 * @property {string} parent epoch n-1's id ("" for the root)
 * @property {string} author
 * @property {Set<string>} removed cumulative
 * @property {Map<string, string>} wraps node id -> this epoch's secret wrapped to it
 */

/**
 * An epoch as plain data (felund/v1/chatmodel.py Epoch.summary).
 * @param {Epoch} e
 * @returns {object}
 */
export function epochSummary(e) {
  const wraps = {};
  for (const id of [...e.wraps.keys()].sort(cmpCodePoints)) wraps[id] = e.wraps.get(id);
  const removed = [...e.removed].sort(cmpCodePoints);
  return { n: e.n, epoch_id: e.epochId, parent: e.parent, author: e.author, removed, wraps };
}

function refuse(state, ev, why) {
  state.rejected.set(why, (state.rejected.get(why) ?? 0) + 1);
  state.refused.set(ev.msgId, why);
}

/** (createdTs, hash) order: how due events apply, and ties break. */
export const byRank = (a, b) => a.ev.createdTs - b.ev.createdTs || (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0);

/**
 * Whether an event is signed (its signer a non-empty base64 key).
 * @param {ControlEvent} ev
 * @returns {boolean}
 */
export const signed = (ev) => typeof ev.signer === "string" && ev.signer !== "";

/**
 * The authors whose unsigned events are forgeries: derived-form ids that signed one
 * (only a derived-form id is known to sign all it writes: felund/v1/chatmodel.py).
 * @param {Iterable<ControlEvent>} events
 * @returns {Set<string>}
 */
export function signers(events) {
  const out = new Set();
  for (const ev of events) if (signed(ev) && isDerivedForm(ev.authorNodeId)) out.add(ev.authorNodeId);
  return out;
}

/**
 * Fold a circle's control events into its state, as of `now`, deterministically.
 * @param {Iterable<ControlEvent>} events of the __control channel, in any order
 * @param {string} [circleId] when given, events naming another circle are refused
 * @param {number} [now] Unix seconds (default: the clock): what is dated beyond now + MAX_SKEW_S is held
 * @param {string} [secret] the circle's secret (64 hex), for the owner's proof ("": no owner)
 * @returns {CircleState}
 */
export function derive(events, circleId = "", now = Math.floor(Date.now() / 1000), secret = "") {
  const horizon = now + MAX_SKEW_S;
  const state = new CircleState(circleId);
  const present = [];
  for (const ev of events) {
    if (ev.createdTs > horizon) {
      refuse(state, ev, "future");
      const fallsDue = ev.createdTs - MAX_SKEW_S;
      state.dueAt = state.dueAt === null ? fallsDue : Math.min(state.dueAt, fallsDue);
    } else {
      present.push(ev);
    }
  }
  const known = signers(present);
  const due = [];
  for (const ev of present) {
    const parsed = !signed(ev) && known.has(ev.authorNodeId) ? "unsigned_from_signer" : parse(ev, circleId);
    if (typeof parsed === "string") refuse(state, ev, parsed);
    else if (parsed !== null) due.push(parsed);
  }
  due.sort(byRank);
  const [rest, everModerators] = foldRoles(state, due, secret);
  foldEpochs(state, rest, everModerators);
  foldXkeys(state, rest);
  const channelEvents = rest.filter((p) => !NOT_CHANNEL_KINDS.has(p.kind));
  const creates = new Map();
  for (const p of channelEvents) {
    if (p.kind === "create" && (!creates.has(p.cid) || beats(p, creates.get(p.cid)))) creates.set(p.cid, p);
  }
  new Fold(state, creates).run(channelEvents);
  foldChannelKeys(state, rest);
  return state;
}

/** The raw key of a signer as the store gives it (base64); an empty one if it is not base64. */
function keyOf(signer) {
  try {
    return b64decode(signer);
  } catch {
    return new Uint8Array(0);
  }
}

/** Among creates of one channel: a signed one beats an unsigned one, then the smallest hash. */
function beats(p, q) {
  if (signed(p.ev) !== signed(q.ev)) return signed(p.ev);
  return p.hash < q.hash;
}

/**
 * Set the owner and moderators from the due events (in rank order); returns the other
 * events, and whom the owner ever made moderator.
 */
function foldRoles(state, due, secret) {
  const rest = [];
  const proofs = [];
  const roleEvents = [];
  for (const p of due) {
    if (p.kind === "owner") proofs.push(p);
    else if (p.kind === "role") roleEvents.push(p);
    else rest.push(p);
  }
  const owners = [];
  for (const p of proofs) {
    if (!signed(p.ev)) refuse(state, p.ev, "unsigned");
    else if (!provesOwner(secret, keyOf(p.ev.signer), p.body.salt)) refuse(state, p.ev, "bad_proof");
    else owners.push(p.ev.authorNodeId);
  }
  // Every valid proof comes from the creator's key: one node, unless it ran two ids (then the first).
  state.owner = owners[0] ?? "";
  const last = new Map(); // target -> op
  const ever = new Set();
  for (const p of roleEvents) {
    if (!signed(p.ev)) refuse(state, p.ev, "unsigned");
    else if (p.ev.authorNodeId !== state.owner) refuse(state, p.ev, "not_allowed");
    else {
      last.set(p.body.target_node_id, p.body.op);
      if (p.body.op === "grant") ever.add(p.body.target_node_id);
    }
  }
  for (const [target, op] of last) if (op === "grant" && target !== state.owner) state.moderators.add(target);
  return [rest, ever];
}

const cmpStr = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** The valid EPOCH_EVTs, their winning chain, and the removals it leaves uncovered. */
function foldEpochs(state, due, everModerators) {
  const sound = new Map();
  const written = new Map();
  // Lower epochs first: a parent is judged before its children.
  const candidates = due.filter((p) => p.kind === "epoch");
  candidates.sort(byEpochRank);
  for (const p of candidates) {
    const why = epochProblem(state, p, sound, everModerators);
    if (why) {
      refuse(state, p.ev, why);
      continue;
    }
    written.set(p.ev.msgId, p.ev);
    sound.set(p.ev.msgId, {
      n: p.body.epoch,
      epochId: p.ev.msgId,
      parent: p.body.parent,
      author: p.ev.authorNodeId,
      removed: new Set(p.body.removed),
      wraps: new Map(Object.entries(p.body.wraps)),
    });
  }
  // One counts when the owner or a moderator (the final roles) wrote it or built on it:
  // demoting a moderator undoes none of its removals that were built on. A moderator the
  // owner removed (on any branch) has no say left, as if demoted, or it could fork.
  const valid = state.epochEvents;
  const byOwner = new Set();
  for (const e of sound.values()) if (e.author === state.owner) for (const r of e.removed) byOwner.add(r);
  for (const e of sound.values()) {
    if (!state.moderates(e.author) || byOwner.has(e.author)) continue;
    for (let step = e; step !== undefined && !valid.has(step.epochId); step = sound.get(step.parent)) {
      valid.set(step.epochId, step);
    }
  }
  for (const [epochId, ev] of written) {
    if (!valid.has(epochId)) refuse(state, ev, "not_allowed"); // a former moderator's, built on by nobody
  }
  state.epochs = winningChain(valid.values());
  state.removed = state.epochs.length ? state.epochs[state.epochs.length - 1].removed : new Set();
  for (const e of valid.values()) {
    for (const r of e.removed) if (!state.removed.has(r)) state.uncovered.add(r);
  }
}

/**
 * The winning chain of a scope's valid epochs (the circle's, or one channel's): winner(0) is
 * the root (""); winner(n) is, among those whose parent is winner(n-1), the one with the
 * smallest id. It stops where no candidate is (felund/v1/chatmodel.py _winning_chain).
 */
function winningChain(valid) {
  const firstChild = new Map();
  for (const e of valid) {
    const known = firstChild.get(e.parent);
    if (known === undefined || e.epochId < known.epochId) firstChild.set(e.parent, e);
  }
  const chain = [];
  // Ids are unique and each step is one epoch up: it ends.
  for (let head = firstChild.get(""); head !== undefined; head = firstChild.get(head.epochId)) {
    chain.push(head);
  }
  return chain;
}

/** Why an epoch's parent is not a valid epoch of its scope just before it; null: it is. */
function parentProblem(n, parentId, valid) {
  if (n === 1) return null;
  const parent = valid.get(parentId);
  if (parent === undefined) return "no_parent";
  return parent.n !== n - 1 ? "parent_mismatch" : null;
}

const byEpochRank = (a, b) =>
  a.body.epoch - b.body.epoch || cmpStr(a.ev.msgId, b.ev.msgId) || cmpStr(a.hash, b.hash);

/** The valid CHANNEL_KEY_EVTs of invite channels, and each channel's winning chain. */
function foldChannelKeys(state, due) {
  const valid = new Map(); // per channel
  for (const p of due.filter((q) => q.kind === "chan_key").sort(byEpochRank)) {
    const channel = state.channels.get(p.cid);
    if (!valid.has(p.cid)) valid.set(p.cid, new Map());
    const mine = valid.get(p.cid);
    let why;
    if (!signed(p.ev)) why = "unsigned";
    else if (channel === undefined) why = "no_channel";
    else if (channel.accessMode !== "invite") why = "not_invite";
    else if (p.ev.authorNodeId !== channel.creator && !state.moderates(p.ev.authorNodeId)) why = "not_allowed";
    else why = parentProblem(p.body.epoch, p.body.parent, mine);
    if (why) {
      refuse(state, p.ev, why);
      continue;
    }
    const key = {
      n: p.body.epoch,
      epochId: p.ev.msgId,
      parent: p.body.parent,
      author: p.ev.authorNodeId,
      channelId: p.cid,
      wraps: new Map(Object.entries(p.body.wraps)),
    };
    mine.set(key.epochId, key);
    state.channelKeys.set(key.epochId, key);
  }
  for (const [cid, keys] of valid) {
    const channel = state.channels.get(cid);
    if (channel !== undefined) channel.keys = winningChain(keys.values());
  }
}

/**
 * Why an EPOCH_EVT does not count whatever is built on it, given the sound ones of lower
 * epochs; null: it may count.
 */
function epochProblem(state, p, sound, everModerators) {
  const author = p.ev.authorNodeId;
  const n = p.body.epoch;
  if (!signed(p.ev)) return "unsigned";
  if (author !== state.owner && !everModerators.has(author)) return "not_allowed";
  const removed = new Set(p.body.removed);
  if (removed.has(state.owner)) return "removes_owner";
  const why = parentProblem(n, p.body.parent, sound);
  if (why) return why;
  const before = n > 1 ? sound.get(p.body.parent).removed : new Set();
  if (before.has(author)) return "removed_author";
  for (const r of before) if (!removed.has(r)) return "removed_shrinks";
  if (author !== state.owner) {
    for (const r of removed) if (!before.has(r) && state.moderators.has(r)) return "removes_moderator";
  }
  return null;
}

/** Each author's X25519 key, from its signed KEY_ANNOUNCEs (the last in order). */
function foldXkeys(state, due) {
  for (const p of due) {
    if (p.kind !== "xkey") continue;
    const ownKey = b64encode(unb64(p.body.pk, X_KEY_LEN)) === b64encode(keyOf(p.ev.signer));
    if (!signed(p.ev)) refuse(state, p.ev, "unsigned");
    else if (!ownKey) refuse(state, p.ev, "not_signer");
    else state.xkeys.set(p.ev.authorNodeId, unb64(p.body.xpk, X_KEY_LEN));
  }
}

/**
 * Who of people (the members seen in the circle) cannot follow a re-key: not
 * removed, and no X25519 key announced (felund/v1/chatmodel.py cannot_follow).
 * @param {CircleState} state
 * @param {Iterable<string>} people
 * @returns {string[]}
 */
export function cannotFollow(state, people) {
  const out = new Set();
  for (const n of people) if (!state.removed.has(n) && !state.xkeys.has(n)) out.add(n);
  return [...out].sort(cmpCodePoints);
}

/**
 * The cumulative removed of the next epoch: the newest winner's, the uncovered
 * removals, and nodeId if given (felund/v1/chatmodel.py next_removed).
 * @param {CircleState} state
 * @param {string} [nodeId]
 * @returns {string[]}
 */
export function nextRemoved(state, nodeId = "") {
  const out = new Set([...state.removed, ...state.uncovered]);
  if (nodeId) out.add(nodeId);
  return [...out].sort(cmpCodePoints);
}

/**
 * What our writers refuse before the fold is asked (felund/v1/chatmodel.py
 * writer_problem): a create of a channel that exists, a join of a key channel
 * without its key, and what the author's role does not allow ("not_allowed":
 * whoCan says who can).
 * @param {CircleState} state
 * @param {object} event
 * @param {string} [author] the writer's node id
 * @returns {string|null}
 */
export function writerProblem(state, event, author = "") {
  if (event.t === "EPOCH_EVT") return removalProblem(state, event, author);
  if (event.t === "ROLE_EVT") return author === state.owner && author ? null : "not_allowed";
  if (event.t === "CIRCLE_NAME_EVT") return !state.owner || state.moderates(author) ? null : "not_allowed";
  if (event.t !== "CHANNEL_EVT") return null;
  const channel = state.channels.get(String(event.channel_id));
  if (channel === undefined) return null;
  if (event.op === "create") return "exists";
  if (event.op === "join" && channel.keyHash && !has(event, "key_hash")) return "needs_key";
  if (event.op === "approve" && author !== channel.creator && !state.moderates(author)) return "not_allowed";
  return null;
}

/** Why author may not write this EPOCH_EVT: whom it newly removes, and its role. */
function removalProblem(state, event, author) {
  if (!author || !state.moderates(author)) return "not_allowed";
  const fresh = new Set(Array.isArray(event.removed) ? event.removed : []);
  for (const r of state.removed) fresh.delete(r);
  if (fresh.has(state.owner)) return "removes_owner";
  if (fresh.has(author)) return "removes_self";
  if (!fresh.size) return "already_removed";
  if (state.roleOf(author) === "moderator" && [...fresh].some((r) => state.moderators.has(r))) {
    return "removes_moderator";
  }
  return null;
}

/**
 * The sentence a writer refused as "not_allowed" shows: who can do what event does
 * (felund/v1/chatmodel.py who_can, word for word).
 * @param {CircleState} state
 * @param {object} event
 * @param {Map<string, string>} [names] node id -> name; default the names the events gave
 * @returns {string}
 */
export function whoCan(state, event, names = state.names) {
  const who = (nodeId) => names.get(nodeId) || nodeId.slice(0, 8);
  const circleOwner = `the circle's owner (${who(state.owner)})`;
  if (event.t === "ROLE_EVT") {
    if (!state.owner) return "this circle has no owner (made by a v1 client or before keys): no moderators";
    return `only ${circleOwner} can name moderators`;
  }
  if (event.t === "CIRCLE_NAME_EVT") return `only ${circleOwner} or a moderator can rename this circle`;
  if (event.t === "EPOCH_EVT") {
    if (!state.owner) {
      return "this circle has no owner (made by a v1 client or before keys): no one can remove a member";
    }
    return `only ${circleOwner} or a moderator can remove a member`;
  }
  const cid = String(event.channel_id);
  const channel = state.channels.get(cid);
  const creator = channel ? `#${cid}'s owner (${who(channel.creator)})` : `#${cid}'s owner`;
  if (!state.owner) return `only ${creator} can approve into #${cid}`;
  return `only ${creator}, the circle's owner or a moderator can approve into #${cid}`;
}

const has = (obj, key) => Object.hasOwn(obj, key);
const get = (obj, key, dflt) => (has(obj, key) ? obj[key] : dflt);

/** An event's parts, or why it is refused whatever else holds (null: no effect). */
function parse(ev, circleId) {
  if (typeof ev.text !== "string") return "too_long";
  const length = cpLength(ev.text);
  if (length > MAX_EPOCH_TEXT) return "too_long";
  let body = NOT_JSON;
  try {
    body = loads(ev.text);
  } catch {
    // refused below, after the length
  }
  if (length > MAX_EVENT_TEXT && !(isObject(body) && WRAPPING.has(get(body, "t", undefined)))) return "too_long";
  if (body === NOT_JSON) return "not_json";
  if (!isObject(body)) return "not_object";
  if (circleId && get(body, "circle_id", circleId) !== circleId) return "other_circle";
  const actor = get(body, "actor_node_id", get(body, "node_id", ev.authorNodeId));
  if (actor !== ev.authorNodeId) return "actor_mismatch"; // only one's own actions
  const kind = get(body, "t", undefined);
  if (kind === "CIRCLE_NAME_EVT") {
    if (!goodName(get(body, "name", undefined))) return "bad_name";
    return { ev, hash: eventHash(ev), kind: "circle_name", body, cid: "" };
  }
  if (kind === "CHANNEL_EVT") return parseChannelEvent(ev, body);
  if (kind === "CIRCLE_OWNER") {
    if (!isHex(get(body, "salt", undefined), SALT_HEX_LEN)) return "bad_proof";
    return { ev, hash: eventHash(ev), kind: "owner", body, cid: "" };
  }
  if (kind === "ROLE_EVT") {
    const op = get(body, "op", undefined);
    if (!ROLE_OPS.includes(op) || get(body, "role", undefined) !== "moderator") return "bad_role";
    if (!isNodeId(get(body, "target_node_id", undefined))) return "bad_target";
    return { ev, hash: eventHash(ev), kind: "role", body, cid: "" };
  }
  if (kind === "EPOCH_EVT") return parseEpoch(ev, body);
  if (kind === "CHANNEL_KEY_EVT") return parseChannelKey(ev, body);
  if (kind === "KEY_ANNOUNCE" && has(body, "xpk")) {
    if (unb64(body.xpk, X_KEY_LEN) === null || unb64(get(body, "pk", undefined), X_KEY_LEN) === null) return "bad_key";
    return { ev, hash: eventHash(ev), kind: "xkey", body, cid: "" };
  }
  if (NO_EFFECT.has(kind)) return null;
  return "unknown_type";
}

const NOT_JSON = Symbol("not json");

/** What is malformed in an epoch's number or parent (EPOCH_EVT, CHANNEL_KEY_EVT); null: nothing. */
function numberProblem(ev, body) {
  const n = get(body, "epoch", undefined);
  // Its msgId names the epoch (in key ids and invite codes): 32 hex, as ours are.
  if (!isInt(n) || n < 1 || n > MAX_EPOCH || !isHex(ev.msgId, MSG_ID_LEN)) return "bad_epoch";
  const parent = get(body, "parent", undefined);
  if (!(n === 1 ? parent === "" : isHex(parent, MSG_ID_LEN))) return "bad_parent";
  return null;
}

/** What is malformed in an epoch's wraps; null: nothing. */
function wrapsProblem(body) {
  const wraps = get(body, "wraps", undefined);
  if (
    !isObject(wraps) ||
    Object.keys(wraps).length > MAX_WRAPS ||
    !Object.entries(wraps).every(
      ([k, v]) => isNodeId(k) && typeof v === "string" && v.length > 0 && cpLength(v) <= MAX_WRAP_CHARS,
    )
  ) {
    return "bad_wraps";
  }
  return null;
}

function parseChannelKey(ev, body) {
  const cid = get(body, "channel_id", undefined);
  if (!isChannelName(cid)) return "bad_channel";
  const why = numberProblem(ev, body) || wrapsProblem(body);
  return why || { ev, hash: eventHash(ev), kind: "chan_key", body, cid };
}

function parseEpoch(ev, body) {
  const why = numberProblem(ev, body);
  if (why) return why;
  const removed = get(body, "removed", undefined);
  if (
    !Array.isArray(removed) ||
    removed.length > MAX_REMOVED ||
    !removed.every((r, i) => isNodeId(r) && (i === 0 || removed[i - 1] < r))
  ) {
    return "bad_removed";
  }
  return wrapsProblem(body) || { ev, hash: eventHash(ev), kind: "epoch", body, cid: "" };
}

function goodName(name) {
  if (typeof name !== "string") return false;
  const n = cpLength(name);
  return n > 0 && n <= MAX_NAME && isPrintable(name);
}

function goodKeyHash(digest) {
  // "" is what the v1 TUI writes for a key channel it does not check (addendum §2.2).
  return typeof digest === "string" && (digest === "" || HEX64_RE.test(digest));
}

function parseChannelEvent(ev, body) {
  const op = get(body, "op", undefined);
  if (!CHANNEL_OPS.includes(op)) return "unknown_op";
  if (NODE_ID_IS_ACTOR.has(op) && get(body, "node_id", ev.authorNodeId) !== ev.authorNodeId) {
    return "actor_mismatch";
  }
  if (op === "rename") {
    if (!goodName(get(body, "display_name", undefined))) return "bad_name";
    return { ev, hash: eventHash(ev), kind: op, body, cid: "" };
  }
  const cid = get(body, "channel_id", undefined);
  if (!isChannelName(cid)) return "bad_channel";
  if (op === "create") {
    if (cid === DEFAULT_CHANNEL) return "exists";
    const mode = get(body, "access_mode", "public");
    if (!ACCESS_MODES.includes(mode)) return "bad_access_mode";
    if (mode === "key" && !goodKeyHash(get(body, "key_hash", ""))) return "bad_key_hash";
  } else if (op === "approve" && !isNodeId(get(body, "target_node_id", undefined))) {
    return "bad_target";
  } else if (op === "leave" && cid === DEFAULT_CHANNEL) {
    return "general";
  }
  return { ev, hash: eventHash(ev), kind: op, body, cid };
}

/** One pass over the due events, in order, with the ones waiting for another. */
class Fold {
  constructor(state, creates) {
    this.state = state;
    this.creates = creates;
    /** @type {Map<string, {what: string, events: object[]}>} */
    this.waiting = new Map();
    this.woken = [];
  }

  run(due) {
    for (const p of due) {
      this.try(p);
      // What an event gave applies right after it.
      for (let i = 0; i < this.woken.length; i++) this.try(this.woken[i]);
      this.woken = [];
    }
    for (const { what, events } of this.waiting.values()) {
      for (const p of events) refuse(this.state, p.ev, WAIT_REASONS[what]);
    }
  }

  try(p) {
    const outcome = this.apply(p);
    if (outcome === null) return;
    if (typeof outcome === "object") {
      const k = outcome.join("\u0000");
      if (!this.waiting.has(k)) this.waiting.set(k, { what: outcome[0], events: [] });
      this.waiting.get(k).events.push(p);
      return;
    }
    refuse(this.state, p.ev, outcome);
  }

  wake(what, cid, node) {
    const k = [what, cid, node].join("\u0000");
    const entry = this.waiting.get(k);
    if (entry === undefined) return;
    this.waiting.delete(k);
    this.woken.push(...entry.events.sort(byRank));
  }

  /** Apply one event: null, why it is refused, or what it waits for ([what, channel, node]). */
  apply(p) {
    const { state } = this;
    const author = p.ev.authorNodeId;
    const { body, cid } = p;
    if (p.kind === "circle_name") {
      if (state.owner && !signed(p.ev)) return "unsigned";
      if (state.owner && !state.moderates(author)) return "not_allowed";
      state.name = body.name;
      return null;
    }
    if (p.kind === "rename") {
      state.names.set(author, body.display_name);
      return null;
    }
    if (p.kind === "create") {
      if (this.creates.get(cid) !== p) return "exists";
      const mode = get(body, "access_mode", "public");
      const digest = mode === "key" ? get(body, "key_hash", "") : "";
      const isPrivate = mode !== "public" && get(body, "private", false) === true;
      state.channels.set(cid, newChannel(cid, mode, digest, author, p.ev.createdTs, [author], isPrivate));
      this.wake("channel", cid, "");
      return null;
    }
    const channel = state.channels.get(cid);
    if (channel === undefined) return ["channel", cid, ""];
    if (p.kind === "join") {
      if (channel.keyHash && get(body, "key_hash", channel.keyHash) !== channel.keyHash) return "wrong_key";
      if (channel.accessMode === "invite" && !channel.approved.has(author)) return ["approved", cid, author];
      channel.members.add(author);
      return null;
    }
    if (p.kind === "request") {
      if (channel.accessMode !== "invite") return "not_invite";
      channel.requests.add(author);
      return null;
    }
    if (p.kind === "approve") {
      // A role, not membership: the channel's creator, the circle's owner or a moderator.
      if (!signed(p.ev)) return "unsigned";
      if (author !== channel.creator && !state.moderates(author)) return "not_allowed";
      const target = body.target_node_id;
      channel.approved.add(target);
      channel.members.add(target);
      channel.requests.delete(target);
      this.wake("approved", cid, target);
      return null;
    }
    channel.members.delete(author); // leave
    return null;
  }
}

// ---- the builder (felund/v1/events.py) --------------------------------------------

/**
 * A CHANNEL_EVT of nodeId (not rename: see renameEvent), as felund/v1/events.py builds it.
 * @param {string} op
 * @param {string} circleId
 * @param {string} channel
 * @param {string} nodeId
 * @param {{access?: string, key?: string, target?: string}} [what]
 * @returns {object}
 * @throws {Error} with the same text as Python's ValueError
 */
export function channelEvent(op, circleId, channel, nodeId, { access = "public", key = "", target = "" } = {}) {
  if (!CHANNEL_OPS.includes(op) || op === "rename") throw new Error(`no channel operation '${op.slice(0, 32)}'`);
  const channelId = channelName(channel);
  const event = { t: "CHANNEL_EVT", op, circle_id: circleId, channel_id: channelId, actor_node_id: nodeId };
  if (op === "create") {
    if (!ACCESS_MODES.includes(access)) throw new Error(`access is one of ${ACCESS_MODES.join(", ")}`);
    if (access === "key" && !key) throw new Error(NEEDS_KEY);
    event.access_mode = access;
    event.key_hash = key ? keyHash(circleId, channelId, key) : "";
    event.created_by = nodeId;
  } else if (op === "approve") {
    if (!target) throw new Error("approve whom? name the person");
    event.target_node_id = target;
  } else {
    event.node_id = nodeId;
    if (op === "join" && key) event.key_hash = keyHash(circleId, channelId, key);
  }
  return event;
}

/**
 * A key or invite channel's create, private: its messages sealed under a channel key
 * (lib/channels.js), read by its members only (felund/v1/events.py made_private).
 * @throws {Error} for anything else
 */
export function madePrivate(event) {
  if (event.op !== "create" || !["key", "invite"].includes(event.access_mode)) {
    throw new Error("only a key or invite channel can be private");
  }
  return { ...event, private: true };
}

/** A display-name change of nodeId in one circle. */
export function renameEvent(circleId, nodeId, name) {
  return { t: "CHANNEL_EVT", op: "rename", circle_id: circleId, node_id: nodeId, actor_node_id: nodeId, display_name: name };
}

/** A circle's name. */
export function circleNameEvent(circleId, name) {
  return { t: "CIRCLE_NAME_EVT", circle_id: circleId, name };
}

// What the owner makes someone (ROLE_EVT grants or revokes the one role there is).
export const GIVEN_ROLES = Object.freeze(["moderator", "member"]);

/**
 * The owner makes target a "moderator", or a plain "member" again (felund/v1/events.py role_event).
 * @param {string} target
 * @param {string} role
 * @returns {object}
 * @throws {Error} with the same text as Python's ValueError
 */
export function roleEvent(target, role) {
  if (!GIVEN_ROLES.includes(role)) throw new Error(`a role is ${GIVEN_ROLES.join(" or ")}`);
  const op = role === "moderator" ? "grant" : "revoke";
  return { op, role: "moderator", t: "ROLE_EVT", target_node_id: target };
}

/**
 * What the owner writes with a demotion so that nobody loses by surprise what
 * `after` (the state with it) takes away from `before`: an approve of each
 * member who stood in a channel only through the demoted one's approvals, and
 * the circle's name if only that one had set it (felund/v1/events.py kept_by_owner).
 * @param {CircleState} before
 * @param {CircleState} after
 * @param {string} circleId
 * @param {string} owner
 * @returns {object[]}
 */
export function keptByOwner(before, after, circleId, owner) {
  const kept = [];
  for (const cid of [...before.channels.keys()].sort(cmpCodePoints)) {
    const now = after.channels.get(cid);
    if (now === undefined) continue; // a demotion makes and unmakes no channel
    const lost = [...before.channels.get(cid).members].filter((m) => !now.members.has(m));
    for (const target of lost.sort(cmpCodePoints)) {
      kept.push(channelEvent("approve", circleId, cid, owner, { target }));
    }
  }
  if (before.name && after.name !== before.name) kept.push(circleNameEvent(circleId, before.name));
  return kept;
}

/**
 * Epoch n after parent (epoch n-1's id, "" for n = 1), as felund/v1/events.py epoch_event builds it.
 * @param {number} n
 * @param {string} parent
 * @param {Iterable<string>} removed cumulative (nextRemoved)
 * @param {Object<string, string>} wraps node id -> the epoch's secret wrapped to it
 * @returns {object}
 * @throws {Error} with the same text as Python's ValueError
 */
export function epochEvent(n, parent, removed, wraps) {
  if (n < 1 || (n === 1) !== (parent === "")) {
    throw new Error("epoch 1 has the root as parent, every later one an epoch id");
  }
  const sortedWraps = {};
  for (const id of Object.keys(wraps).sort(cmpCodePoints)) sortedWraps[id] = wraps[id];
  const ids = [...new Set(removed)].sort(cmpCodePoints);
  return { epoch: n, parent, removed: ids, t: "EPOCH_EVT", wraps: sortedWraps };
}

/**
 * The secret (hex) of the epoch before epochId, to be sealed under epoch epochId
 * (felund/v1/events.py epoch_link_event).
 * @param {string} epochId
 * @param {string} prevSecretHex
 * @returns {object}
 */
export function epochLinkEvent(epochId, prevSecretHex) {
  return { epoch_id: epochId, prev: prevSecretHex, t: "EPOCH_LINK" };
}

/** The event as written at createdTs: a CHANNEL_EVT says its date (v1 reads it there). */
export function dated(event, createdTs) {
  return event.t === "CHANNEL_EVT" ? { ...event, created_ts: createdTs } : event;
}

/**
 * The node `who` names among [nodeId, current name] pairs: a full node id, the
 * start of exactly one, or exactly one's name (felund/v1/events.py resolve_person).
 * @param {Iterable<[string, string]>} people
 * @param {string} who
 * @returns {string}
 * @throws {Error} saying why not
 */
export function resolvePerson(people, who) {
  who = pyStrip(who);
  if (!who) throw new Error("name someone: a node id, its start, or a name");
  if (isNodeId(who)) return who;
  const found = new Set();
  for (const [node, name] of people) {
    if ((name && name === who) || node.startsWith(who)) found.add(node);
  }
  if (found.size === 1) return [...found][0];
  if (found.size) throw new Error(`"${who}" could be ${found.size} people: give more of a node id`);
  throw new Error(`no one in this circle is "${who}" (by node id, its start, or name)`);
}

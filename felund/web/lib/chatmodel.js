// Circles, channels and people, derived from control events: a port of
// felund/chatmodel.py with the same rules and the same results, so that a
// browser and a Python node holding the same events derive the same state.
//
// Control events are messages on the `__control` channel whose text is a
// compact, key-sorted JSON object. The state is a fold of a circle's events
// in (createdTs, msgId) order; within one second an event refused for want of
// another (a join sorted before its create) is tried again after the rest of
// its second, until nothing more applies. Rules:
// - `create` makes a channel (first create wins); its creator is a member.
// - `join`: anyone joins a public channel; a key channel needs the key's hash;
//   an invite channel needs an `approve` first.
// - `request` asks to join an invite channel; `approve` by a member makes
//   `target_node_id` a member.
// - `leave` leaves a channel (never `general`); `rename` sets the author's
//   display name; `CIRCLE_NAME_EVT` names the circle.

import { cmpCodePoints, cpLength } from "./bytes.js";
import { sha256Hex } from "./crypto.js";
import { isPrintable } from "./invite.js";
import { dumps, isObject, loads } from "./pyjson.js";
import { DEFAULT_CHANNEL } from "./wire.js";

export const ACCESS_MODES = Object.freeze(["public", "key", "invite"]);
export const CHANNEL_OPS = Object.freeze(["create", "join", "request", "approve", "leave", "rename"]);
export const MAX_EVENT_TEXT = 4096;
export const MAX_NAME = 64;
const CHANNEL_RE = /^[a-z0-9_-]{1,32}$/;
const NODE_RE = /^[A-Za-z0-9_.-]{1,128}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;
// Refusals that a later event of the same second can lift.
const WAITS_ON_ANOTHER = new Set(["no_channel", "not_approved", "not_member"]);

/**
 * The hash of a channel key that control events carry (never the key itself).
 * @param {string} key
 * @returns {Promise<string>} hex SHA-256 of the key's UTF-8
 */
export function keyHash(key) {
  return sha256Hex(key);
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
 * @typedef {object} Channel
 * @property {string} channelId
 * @property {string} accessMode public | key | invite
 * @property {string} keyHash "" unless accessMode is key
 * @property {string} creator node id ("" for general)
 * @property {number} createdTs
 * @property {Set<string>} members
 * @property {Set<string>} approved
 * @property {Set<string>} requests
 */

function newChannel(channelId, accessMode = "public", hash = "", creator = "", createdTs = 0, members = []) {
  return {
    channelId,
    accessMode,
    keyHash: hash,
    creator,
    createdTs,
    members: new Set(members),
    approved: new Set(),
    requests: new Set(),
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
   * The state as plain data, shaped and ordered as felund.chatmodel.CircleState.summary().
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
      };
    }
    return { name: this.name, names, channels };
  }
}

/**
 * @typedef {object} ControlEvent a control message as the store holds it
 * @property {string} msgId
 * @property {string} authorNodeId
 * @property {number} createdTs
 * @property {string} text
 */

function reject(state, problem) {
  state.rejected.set(problem, (state.rejected.get(problem) ?? 0) + 1);
}

/**
 * Fold a circle's control events into its state, deterministically.
 * @param {Iterable<ControlEvent>} events of the __control channel, in any order
 * @param {string} [circleId] when given, events naming another circle are refused
 * @returns {CircleState}
 */
export function derive(events, circleId = "") {
  const state = new CircleState(circleId);
  const ordered = [...events].sort(
    (a, b) => a.createdTs - b.createdTs || cmpCodePoints(a.msgId, b.msgId),
  );
  const bySecond = new Map();
  for (const ev of ordered) {
    if (!bySecond.has(ev.createdTs)) bySecond.set(ev.createdTs, []);
    bySecond.get(ev.createdTs).push(ev);
  }
  for (const second of bySecond.values()) {
    let pending = second;
    while (pending.length) {
      const waiting = [];
      for (const ev of pending) {
        const problem = apply(state, ev);
        if (problem !== null && WAITS_ON_ANOTHER.has(problem)) waiting.push([ev, problem]);
        else if (problem) reject(state, problem);
      }
      if (waiting.length === pending.length) {
        // Nothing more applies this second.
        for (const [, problem] of waiting) reject(state, problem);
        break;
      }
      pending = waiting.map(([ev]) => ev);
    }
  }
  return state;
}

const has = (obj, key) => Object.hasOwn(obj, key);
const get = (obj, key, dflt) => (has(obj, key) ? obj[key] : dflt);

/**
 * Apply one event to state.
 * @param {CircleState} state
 * @param {ControlEvent} ev
 * @returns {string|null} why it was ignored, or null if it applied
 */
export function apply(state, ev) {
  if (typeof ev.text !== "string" || cpLength(ev.text) > MAX_EVENT_TEXT) return "too_long";
  let body;
  try {
    body = loads(ev.text);
  } catch {
    return "not_json";
  }
  if (!isObject(body)) return "not_object";
  if (state.circleId && get(body, "circle_id", state.circleId) !== state.circleId) {
    return "other_circle";
  }
  const actor = get(body, "actor_node_id", get(body, "node_id", ev.authorNodeId));
  if (actor !== ev.authorNodeId) return "actor_mismatch"; // only one's own actions
  const kind = get(body, "t", undefined);
  if (kind === "CIRCLE_NAME_EVT") {
    const name = get(body, "name", undefined);
    if (!goodName(name)) return "bad_name";
    state.name = name;
    return null;
  }
  if (kind === "CHANNEL_EVT") return channelEvent(state, ev, body);
  if (kind === "ANCHOR_ANNOUNCE" || kind === "CALL_EVT") return null;
  return "unknown_type";
}

function goodName(name) {
  if (typeof name !== "string") return false;
  const n = cpLength(name);
  return n > 0 && n <= MAX_NAME && isPrintable(name);
}

function channelEvent(state, ev, body) {
  const op = get(body, "op", undefined);
  if (!CHANNEL_OPS.includes(op)) return "unknown_op";
  if (op === "rename") {
    const name = get(body, "display_name", undefined);
    if (!goodName(name)) return "bad_name";
    state.names.set(ev.authorNodeId, name);
    return null;
  }
  const cid = get(body, "channel_id", undefined);
  if (typeof cid !== "string" || !CHANNEL_RE.test(cid) || cid.startsWith("__")) {
    return "bad_channel";
  }
  const channel = state.channels.get(cid);
  if (op === "create") return channel === undefined ? create(state, ev, cid, body) : "exists";
  if (channel === undefined) return "no_channel";
  if (op === "join") return join(channel, ev.authorNodeId, body);
  if (op === "request") {
    if (channel.accessMode !== "invite") return "not_invite";
    channel.requests.add(ev.authorNodeId);
    return null;
  }
  if (op === "approve") {
    const target = get(body, "target_node_id", undefined);
    if (typeof target !== "string" || !NODE_RE.test(target)) return "bad_target";
    if (!channel.members.has(ev.authorNodeId)) return "not_member";
    channel.approved.add(target);
    channel.members.add(target);
    channel.requests.delete(target);
    return null;
  }
  // leave
  if (cid === DEFAULT_CHANNEL) return "general";
  channel.members.delete(ev.authorNodeId);
  return null;
}

function create(state, ev, cid, body) {
  const mode = get(body, "access_mode", "public");
  if (!ACCESS_MODES.includes(mode)) return "bad_access_mode";
  const digest = get(body, "key_hash", "");
  if (mode === "key" && !(typeof digest === "string" && HEX64_RE.test(digest))) {
    return "bad_key_hash";
  }
  state.channels.set(
    cid,
    newChannel(cid, mode, mode === "key" ? digest : "", ev.authorNodeId, ev.createdTs, [ev.authorNodeId]),
  );
  return null;
}

function join(channel, author, body) {
  if (channel.accessMode === "key" && get(body, "key_hash", null) !== channel.keyHash) {
    return "wrong_key";
  }
  if (channel.accessMode === "invite" && !channel.approved.has(author)) return "not_approved";
  channel.members.add(author);
  return null;
}

// The calls of a circle, derived from its CALL_EVT control events: a port of
// felund/v1/calls.py (the fold) and of events.call_event / call_words (the
// builder, the header's words), with the same rules and the same results, so a
// browser and a node holding the same events see the same calls. Pure: no IO,
// no clock but the `now` it is given (a create without a session id draws one).
// The rules are stated in felund/v1/calls.py; in short:
// - events dated more than MAX_SKEW_S after now are held; a session's events
//   apply in (createdTs, eventHash) order, its create first (one that arrives
//   before its create waits for it); of several creates of a session, the first;
// - create/join/view/leave/end speak for their author only: host_node_id,
//   node_id and actor_node_id, where present, must name it; the host is the
//   create's author;
// - end and revoke count only from the host; when the host is one of ours (a
//   derived-form id that signs: chatmodel.signers), only signed, and an
//   unsigned event in a signer's name is refused whatever it is;
// - at most MAX_PARTICIPANTS participants, MAX_VIEWERS viewers, MAX_SESSIONS
//   sessions; the events of a node blocked here are refused ("blocked");
//   a call not ended is over CALL_IDLE_S after its last event;
// - byChannel(): per channel, the live call created first.

import { cmpCodePoints, cpLength, randomHex } from "./bytes.js";
import { byRank, channelName, eventHash, MAX_EVENT_TEXT, MAX_SKEW_S, signed, signers } from "./chatmodel.js";
import { isNodeId } from "./ids.js";
import { pyStrip } from "./invite.js";
import { isObject, loads } from "./pyjson.js";
import { DEFAULT_CHANNEL } from "./wire.js";

export const CALL_OPS = Object.freeze(["create", "join", "view", "leave", "end", "revoke"]);
// Accepted by v1 Python and never sent by anyone: no effect (addendum §1.2).
export const INERT_OPS = Object.freeze(["invite", "signal.offer", "signal.answer", "signal.candidate"]);
export const MAX_PARTICIPANTS = 32;
export const MAX_VIEWERS = 64;
export const MAX_SESSIONS = 256;
export const MAX_SESSION_ID = 64;
export const MAX_CHANNEL_ID = 64;
export const CALL_IDLE_S = 12 * 3600;

/**
 * @typedef {object} Call one live call
 * @property {string} sessionId
 * @property {string} channelId
 * @property {string} host node id (the create's author)
 * @property {number} createdTs
 * @property {number} lastTs the date of its last applied event
 * @property {string[]} participants sorted
 * @property {string[]} viewers sorted
 * @property {string} state "pending" (only the host so far) or "active"
 */

/**
 * A call as answers carry it: the same object as felund/v1/calls.py Call.summary().
 * @param {Call} c
 * @returns {object}
 */
export function callSummary(c) {
  return {
    session_id: c.sessionId,
    channel_id: c.channelId,
    host: c.host,
    created_ts: c.createdTs,
    last_ts: c.lastTs,
    participants: [...c.participants],
    viewers: [...c.viewers],
    state: c.state,
  };
}

/** The live calls of a circle, and what was refused (by reason, and per msgId). */
export class Calls {
  constructor() {
    /** @type {Map<string, Call>} by session id, in the order of their creates */
    this.sessions = new Map();
    /** @type {Map<string, number>} */
    this.rejected = new Map();
    /** @type {Map<string, string>} */
    this.refused = new Map();
    /** @type {number|null} when a held event falls due, or a call runs idle: derive again then */
    this.dueAt = null;
  }

  /**
   * The call of each channel that has one: the live one created first.
   * @returns {Map<string, Call>}
   */
  byChannel() {
    const out = new Map();
    for (const c of this.sessions.values()) if (!out.has(c.channelId)) out.set(c.channelId, c);
    return out;
  }
}

const has = (obj, key) => Object.hasOwn(obj, key);
const get = (obj, key, dflt) => (has(obj, key) ? obj[key] : dflt);

function hold(calls, at) {
  calls.dueAt = calls.dueAt === null ? at : Math.min(calls.dueAt, at);
}

function refuse(calls, ev, why) {
  calls.rejected.set(why, (calls.rejected.get(why) ?? 0) + 1);
  calls.refused.set(ev.msgId, why);
}

/**
 * Fold a circle's control events into its live calls, as of `now`, deterministically.
 * @param {Iterable<import("./chatmodel.js").ControlEvent>} events of the __control channel, any order
 * @param {string} [circleId] when given, events naming another circle are refused
 * @param {number} [now] Unix seconds (default: the clock)
 * @param {Iterable<string>} [blocked] node ids blocked here: their events are refused
 * @returns {Calls}
 */
export function deriveCalls(events, circleId = "", now = Math.floor(Date.now() / 1000), blocked = []) {
  const calls = new Calls();
  const hidden = new Set(blocked);
  const present = [];
  for (const ev of events) {
    if (ev.createdTs > now + MAX_SKEW_S) hold(calls, ev.createdTs - MAX_SKEW_S);
    else present.push(ev);
  }
  const ours = signers(present);
  const bySession = new Map();
  for (const ev of present) {
    const parsed = parse(ev, circleId);
    if (typeof parsed === "string") refuse(calls, ev, parsed);
    else if (parsed !== null) {
      if (hidden.has(ev.authorNodeId)) refuse(calls, ev, "blocked");
      else if (!signed(ev) && ours.has(ev.authorNodeId)) refuse(calls, ev, "unsigned_from_signer");
      else if (bySession.has(parsed.sessionId)) bySession.get(parsed.sessionId).push(parsed);
      else bySession.set(parsed.sessionId, [parsed]);
    }
  }
  const made = [];
  for (const parts of bySession.values()) {
    parts.sort(byRank);
    const first = parts.find((p) => p.op === "create");
    if (first === undefined) {
      for (const p of parts) refuse(calls, p.ev, "no_session");
      continue;
    }
    const channel = get(first.body, "channel_id", undefined);
    const session = {
      create: first,
      channelId: typeof channel === "string" && pyStrip(channel) ? pyStrip(channel) : DEFAULT_CHANNEL,
      participants: new Set([first.ev.authorNodeId]),
      viewers: new Set(),
      active: false,
      ended: false,
      lastTs: first.ev.createdTs,
    };
    made.push(session);
    for (const p of parts) {
      if (p === first) continue;
      const why = p.op === "create" ? "exists" : apply(session, p, ours);
      if (why) refuse(calls, p.ev, why);
    }
  }
  made.sort((a, b) => byRank(a.create, b.create));
  made.forEach((s, n) => {
    if (n >= MAX_SESSIONS) {
      refuse(calls, s.create.ev, "too_many_sessions");
      return;
    }
    const idleAt = s.lastTs + CALL_IDLE_S;
    if (s.ended || idleAt <= now) return;
    hold(calls, idleAt);
    calls.sessions.set(s.create.sessionId, {
      sessionId: s.create.sessionId,
      channelId: s.channelId,
      host: s.create.ev.authorNodeId,
      createdTs: s.create.ev.createdTs,
      lastTs: s.lastTs,
      participants: [...s.participants].sort(cmpCodePoints),
      viewers: [...s.viewers].sort(cmpCodePoints),
      state: s.active ? "active" : "pending",
    });
  });
  return calls;
}

// The fields that name the node an op speaks for (they must name its author).
const SELF_FIELDS = {
  create: ["host_node_id", "actor_node_id"],
  join: ["node_id", "actor_node_id"],
  view: ["node_id", "actor_node_id"],
  leave: ["node_id", "actor_node_id"],
  end: ["host_node_id", "actor_node_id"],
  revoke: ["actor_node_id"],
};

/** A CALL_EVT's parts, why it is refused, or null (not a call event, or inert). */
function parse(ev, circleId) {
  if (typeof ev.text !== "string") return null;
  let body;
  try {
    body = loads(ev.text);
  } catch {
    return null; // not JSON: the channel fold counts it
  }
  if (!isObject(body) || get(body, "t", undefined) !== "CALL_EVT") return null;
  if (cpLength(ev.text) > MAX_EVENT_TEXT) return "too_long";
  const op = get(body, "op", undefined);
  if (INERT_OPS.includes(op)) return null;
  if (!CALL_OPS.includes(op)) return "bad_op";
  const sid = get(body, "session_id", undefined);
  if (typeof sid !== "string" || !pyStrip(sid) || cpLength(sid) > MAX_SESSION_ID) return "bad_session";
  if (circleId && get(body, "circle_id", circleId) !== circleId) return "other_circle";
  if (SELF_FIELDS[op].some((f) => has(body, f) && body[f] !== ev.authorNodeId)) return "actor_mismatch";
  if (op === "create") {
    const channel = get(body, "channel_id", "");
    if (typeof channel !== "string" || cpLength(channel) > MAX_CHANNEL_ID) return "bad_channel";
  }
  if (op === "revoke" && !isNodeId(get(body, "target_node_id", undefined))) return "bad_target";
  return { ev, hash: eventHash(ev), op, sessionId: sid, body };
}

/** Apply one event to its (made) session: null, or why it changes nothing. */
function apply(s, p, ours) {
  if (s.ended) return "ended";
  const author = p.ev.authorNodeId;
  const host = s.create.ev.authorNodeId;
  if (p.op === "end" || p.op === "revoke") {
    if (author !== host) return "not_host";
    if (ours.has(host) && !signed(p.ev)) return "unsigned";
  }
  if (p.op === "join") {
    if (s.participants.has(author)) return "already";
    if (s.participants.size >= MAX_PARTICIPANTS) return "full";
    s.participants.add(author);
    s.active = s.active || s.participants.size > 1;
  } else if (p.op === "view") {
    if (s.viewers.has(author)) return "already";
    if (s.viewers.size >= MAX_VIEWERS) return "full";
    s.viewers.add(author);
    s.active = true;
  } else if (p.op === "leave") {
    s.participants.delete(author);
    s.viewers.delete(author);
  } else if (p.op === "revoke") {
    s.participants.delete(p.body.target_node_id);
    s.viewers.delete(p.body.target_node_id);
  } else {
    s.ended = true; // end
  }
  s.lastTs = Math.max(s.lastTs, p.ev.createdTs);
  return null;
}

/**
 * A CALL_EVT of `nodeId` with the keys, in the order, the v1 web writes them (addendum §1.2);
 * throws Error if bad. A create without `sessionId` gets a new one (32 hex).
 * @param {string} op one of CALL_OPS
 * @param {string} circleId
 * @param {string} nodeId the writer's own id (it speaks only for itself)
 * @param {string} [sessionId]
 * @param {{channel?: string, target?: string}} [opts] the create's channel; the revoke's target
 * @returns {object}
 */
export function callEvent(op, circleId, nodeId, sessionId = "", { channel = DEFAULT_CHANNEL, target = "" } = {}) {
  if (!CALL_OPS.includes(op)) throw new Error(`no call operation ${JSON.stringify(String(op).slice(0, 32))}`);
  const sid = op === "create" ? sessionId || randomHex(16) : sessionId;
  if (!sid) throw new Error("which call? name its session");
  const event = { t: "CALL_EVT", op, session_id: sid };
  if (op === "create") {
    event.host_node_id = nodeId;
    event.circle_id = circleId;
    event.channel_id = channelName(channel);
  } else if (op === "end") {
    event.host_node_id = nodeId;
  } else if (op === "revoke") {
    if (!isNodeId(target)) throw new Error("revoke whom? name the viewer");
    event.target_node_id = target;
  } else {
    event.node_id = nodeId;
    if (op === "leave") event.reason = "user_left";
  }
  event.actor_node_id = nodeId;
  return event;
}

/**
 * A call as a header says it: "call in #general, started by alice, 3 in it" (events.call_words).
 * @param {Call} c
 * @param {Map<string, string>|Record<string, string>} names node id -> display name
 * @returns {string}
 */
export function callWords(c, names) {
  const nameOf = (id) => (names instanceof Map ? names.get(id) : names[id]) || id.slice(0, 8);
  const watching = c.viewers.length ? `, ${c.viewers.length} watching` : "";
  return `call in #${c.channelId}, started by ${nameOf(c.host)}, ${c.participants.length} in it${watching}`;
}

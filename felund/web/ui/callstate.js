// The one place the page reads and writes CALL_EVTs: the fold of a circle's
// control events into its calls, and the event builders (addendum §1.2-1.3).
// A stand-in for lib/calls.js (the node's felund/v1/calls.py in JS) until it
// lands; the rest of the page uses only callsIn / callEvent.

import { randomHex } from "../lib/bytes.js";
import { isObject, loads } from "../lib/pyjson.js";

function pyObject(text) {
  try {
    const v = loads(text);
    return isObject(v) ? v : null;
  } catch {
    return null;
  }
}

const OPS = new Set(["create", "join", "view", "leave", "end", "revoke"]);
const str = (v) => (typeof v === "string" ? v.trim() : "");

/**
 * The calls of a circle from its control events (arrival order), as the web
 * applies them, except that host authority (end, revoke) is the SIGNED
 * author's when the event is signed: a signed event by anyone but the host
 * changes nothing. Map session_id -> {sessionId, host, channelId, createdTs,
 * participants: Set, viewers: Set, ended: null|"host"}.
 */
export function foldCalls(control) {
  const calls = new Map();
  for (const m of control) {
    const e = pyObject(m.text);
    if (!e || e.t !== "CALL_EVT" || !OPS.has(e.op)) continue;
    const sid = str(e.session_id);
    if (!sid) continue;
    const actor = m.signer ? m.authorNodeId : str(e.actor_node_id);
    const call = calls.get(sid);
    if (e.op === "create") {
      if (call) continue;
      const host = m.signer ? m.authorNodeId : "host_node_id" in e ? str(e.host_node_id) : actor;
      calls.set(sid, {
        sessionId: sid,
        host,
        channelId: str(e.channel_id) || "general",
        createdTs: typeof e.created_ts === "number" ? e.created_ts : m.createdTs,
        participants: new Set([host]),
        viewers: new Set(),
      });
      continue;
    }
    if (!call) continue;
    const node = m.signer ? m.authorNodeId : "node_id" in e ? str(e.node_id) : actor;
    if (e.op === "join" && node) call.participants.add(node);
    else if (e.op === "view" && node) call.viewers.add(node);
    else if (e.op === "leave") {
      call.participants.delete(node);
      call.viewers.delete(node);
    } else if (e.op === "end") {
      const claimed = m.signer ? actor : "host_node_id" in e ? str(e.host_node_id) : actor;
      if (!claimed || claimed === call.host) calls.delete(sid);
    } else if (e.op === "revoke") {
      const target = str(e.target_node_id);
      if ((!actor || actor === call.host) && target) {
        call.participants.delete(target);
        call.viewers.delete(target);
      }
    }
  }
  return calls;
}

/** The call of a channel: the first one still running there (as the other client shows it). */
export function callIn(calls, channelId) {
  for (const call of calls.values()) if (call.channelId === channelId) return call;
  return null;
}

/** A CALL_EVT of ours (§1.2's keys): op create needs circleId and channelId; revoke a target. */
export function callEvent(op, me, { sessionId = randomHex(16), circleId, channelId, target, createdTs } = {}) {
  const base = { t: "CALL_EVT", op, session_id: sessionId };
  if (op === "create") {
    return { ...base, host_node_id: me, circle_id: circleId, channel_id: channelId, created_ts: createdTs, actor_node_id: me };
  }
  if (op === "end") return { ...base, host_node_id: me, actor_node_id: me };
  if (op === "revoke") return { ...base, target_node_id: target, actor_node_id: me };
  if (op === "leave") return { ...base, node_id: me, reason: "user_left", actor_node_id: me };
  return { ...base, node_id: me, actor_node_id: me };
}

// The one place the page reads and writes CALL_EVTs, over lib/calls.js (the
// node's felund/v1/calls.py in JS): the calls of a circle, the call of a
// channel, our events, and the header's words for a call.

import { callEvent as buildCallEvent, callWords, deriveCalls } from "../lib/calls.js";

export { callWords };

/**
 * The live calls of a circle from its control events, those of `blocked` nodes
 * refused: Map session id ->
 * {sessionId, host, channelId, participants: Set, viewers: Set, words(names)}.
 */
export function foldCalls(view, blocked = []) {
  const now = Math.floor(Date.now() / 1000);
  const derived = deriveCalls(view.control, view.id, now, blocked);
  const out = new Map();
  for (const [sid, c] of derived.sessions) {
    out.set(sid, { ...c, participants: new Set(c.participants), viewers: new Set(c.viewers), words: (names) => callWords(c, names) });
  }
  out.dueAt = derived.dueAt;
  return out;
}

/** The call of a channel: the live one created first (as the node's header shows it). */
export function callIn(calls, channelId) {
  for (const call of calls.values()) if (call.channelId === channelId) return call;
  return null;
}

/** A CALL_EVT of ours: create needs circleId and channelId (its session id is drawn); revoke a target. */
export function callEvent(op, me, { sessionId = "", circleId = "", channelId, target } = {}) {
  return buildCallEvent(op, circleId, me, sessionId, { channel: channelId, target });
}

// Who connects to whom in a call, and how the signals between them are named
// and read (addendum §1.4-1.6). Sans IO: the page's call manager (ui/call.js)
// owns the RTCPeerConnections and the relay; this module only decides.

/** The host serves at most this many viewers (MAX_BROADCAST_VIEWERS of the other client). */
export const MAX_SERVED_VIEWERS = 6;

/** The signal types of call media; DataChannel signals (offer, answer, candidate) are not ours. */
export const MEDIA_TYPES = ["media-offer", "media-answer", "media-candidate"];

/** A signal's ttl_s as the other client sends it: 60 s for candidates, 120 s otherwise. */
export const ttlOf = (type) => (type.endsWith("candidate") ? 60 : 120);

/** The largest signal payload the relay takes (code points; SDP is ASCII). */
export const MAX_PAYLOAD = 65536;

const byString = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The signalling session id of one media connection: "media:" + call session id
 * + ":" + the two node ids sorted and joined with ":" (call/index.ts makeSessionId).
 */
export function mediaSessionId(callSessionId, a, b) {
  const [x, y] = [a, b].sort(byString);
  return `media:${callSessionId}:${x}:${y}`;
}

/**
 * The media connections `me` keeps in a call: Map peer node id ->
 * `{offerer, sends, viewer}`. Participants form a full mesh (the smaller id
 * offers); the host, while a participant, offers to the first MAX_SERVED_VIEWERS
 * viewers in sorted order; a viewer among those answers the host and sends
 * nothing. Anyone else has no connection.
 * @param {{host: string, participants: Iterable<string>, viewers: Iterable<string>}|null} call
 * @param {string} me
 * @returns {Map<string, {offerer: boolean, sends: boolean, viewer: boolean}>}
 */
export function linksOf(call, me) {
  const links = new Map();
  if (!call) return links;
  const participants = new Set(call.participants);
  const served = [...new Set(call.viewers)]
    .filter((v) => !participants.has(v))
    .sort(byString)
    .slice(0, MAX_SERVED_VIEWERS);
  if (participants.has(me)) {
    for (const p of [...participants].sort(byString)) {
      if (p !== me) links.set(p, { offerer: me < p, sends: true, viewer: false });
    }
    if (me === call.host) {
      for (const v of served) links.set(v, { offerer: true, sends: true, viewer: true });
    }
  } else if (served.includes(me) && participants.has(call.host)) {
    links.set(call.host, { offerer: false, sends: false, viewer: false });
  }
  return links;
}

/**
 * A received signal as the call manager takes it, or null if it is not one of
 * this call's: `{id, peer, type, description | candidate}`. The session id must
 * be the one this call and this peer make (§1.6.2 step 2); the payload must be
 * a session description of the type's kind, or one ICE candidate.
 */
export function readSignal(signal, callSessionId, me) {
  return readSignalOf(signal, me, MEDIA_TYPES, (peer) => mediaSessionId(callSessionId, me, peer));
}

/**
 * A received signal of one of `types` ([offer, answer, candidate] type names),
 * or null: from another node, under the session id sessionIdFor(peer) makes,
 * with a bounded payload of the type's kind. Shared by calls and the
 * DataChannel transport (lib/dctransport.js).
 */
export function readSignalOf(signal, me, types, sessionIdFor) {
  if (signal === null || typeof signal !== "object") return null;
  const { id, from_node: peer, type, payload, session_id: sessionId } = signal;
  if (!types.includes(type) || typeof peer !== "string" || peer === me) return null;
  if (sessionId !== sessionIdFor(peer)) return null;
  if (typeof payload !== "string" || payload.length > MAX_PAYLOAD) return null;
  let body;
  try {
    body = JSON.parse(payload);
  } catch {
    return null;
  }
  if (body === null || typeof body !== "object") return null;
  if (type === types[2]) {
    if (typeof body.candidate !== "string") return null;
    return { id, peer, type, candidate: body };
  }
  const kind = type === types[0] ? "offer" : "answer";
  if (body.type !== kind || typeof body.sdp !== "string") return null;
  return { id, peer, type, description: { type: kind, sdp: body.sdp } };
}

/**
 * The ICE servers a call uses: the F3 setting when it overrides (an empty list
 * then means host candidates only), else the relay's list.
 * @param {{fromRelay: boolean, servers: object[]}|null} setting
 * @param {object[]} relayList
 */
export function iceServersFor(setting, relayList) {
  if (setting && setting.fromRelay === false) return Array.isArray(setting.servers) ? setting.servers : [];
  return relayList;
}

/** Whether a list of ICE servers has a TURN server (else a peer behind NAT can be unreachable). */
export const hasTurn = (servers) =>
  servers.some((s) => [].concat(s.urls).some((u) => typeof u === "string" && /^turns?:/.test(u)));

/**
 * The F3 text of ICE servers, one a line: `URL [USERNAME CREDENTIAL]` ->
 * RTCIceServer objects. Throws Error with a sentence on a bad line.
 */
export function parseIceText(text) {
  const servers = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const [url, username, credential, ...extra] = line.split(/\s+/);
    if (!/^(stun|stuns|turn|turns):\S{1,250}$/.test(url) || extra.length || (username && !credential)) {
      throw new Error(`not a STUN/TURN line: "${line.slice(0, 80)}" (URL [USERNAME CREDENTIAL], e.g. turn:turn.example.org:3478 user secret)`);
    }
    servers.push(username ? { urls: [url], username, credential } : { urls: [url] });
  }
  if (servers.length > 8) throw new Error("at most 8 STUN/TURN servers");
  return servers;
}

/** The F3 text of a list of ICE servers (parseIceText's inverse). */
export const iceText = (servers) =>
  servers
    .map((s) => [[].concat(s.urls)[0], s.username, s.credential].filter((x) => x).join(" "))
    .join("\n");

// The secrets and enc key ids of private channels, and which channel epochs this
// page writes (sans IO), byte for byte with felund/trust/channels.py and
// felund/store/channelkeys.py:
//
// - a key channel's secret: HKDF-SHA256(ikm = the typed key, salt = the circle
//   epoch's secret, info = "felund-chan-key-v1|<circle_id>|<channel_id>"); key id
//   "<epoch key id>/k";
// - an invite channel's: HKDF-SHA256(ikm = its channel epoch's random secret, salt =
//   the circle epoch's secret, info = "felund-chan-inv-v1|<circle_id>|<channel_id>");
//   key id "<epoch key id>/i<m>.<CHANNEL_KEY_EVT id>".
// Either is then used as any circle secret is (a message secret).

import { b64encode, bytesToHex, hexToBytes, utf8 } from "./bytes.js";
import { hkdf } from "./crypto.js";
import { MAX_EPOCH, MAX_KEY_ID_LEN, parseKeyId, xpkOf } from "./wrap.js";

export const KEY_PART = "k";
/** The longest "<epoch key id>/i<m>.<id>": what the wire must carry (wire.js MAX_KEY_ID_CHARS). */
export const MAX_CHANNEL_KEY_ID_LEN = MAX_KEY_ID_LEN + 2 + String(MAX_EPOCH).length + 1 + 32;
/** Characters of a key channel's key this page keeps (felund/store/channelkeys.py). */
export const MAX_TYPED_KEY = 1024;
const PART_RE = /^(?:k|i([1-9][0-9]{0,9})\.([0-9a-f]{32}))$/;

/**
 * The message secret (hex) of a key channel under one circle epoch's secret (hex).
 * @returns {Promise<string>}
 */
export async function keyChannelSecret(typedKey, epochSecret, circleId, channelId) {
  const info = `felund-chan-key-v1|${circleId}|${channelId}`;
  return bytesToHex(await hkdf(utf8(typedKey), hexToBytes(epochSecret), info, 32));
}

/**
 * The message secret (hex) of an invite channel's epoch secret (hex) under one circle epoch's secret (hex).
 * @returns {Promise<string>}
 */
export async function inviteChannelSecret(channelSecret, epochSecret, circleId, channelId) {
  const info = `felund-chan-inv-v1|${circleId}|${channelId}`;
  return bytesToHex(await hkdf(hexToBytes(channelSecret), hexToBytes(epochSecret), info, 32));
}

/** The channel part of an invite channel's key id: "i<m>.<CHANNEL_KEY_EVT id>". */
export function invitePart(n, eventId) {
  return `i${n}.${eventId}`;
}

/** The enc.key_id of a private channel's messages: "<circle epoch key id>/<part>". */
export function channelKeyId(epochKeyId, part) {
  return `${epochKeyId}/${part}`;
}

/**
 * [circle epoch key id, channel part] of a private channel's key id; null if it is not
 * one (a circle epoch's own key id is not).
 * @param {any} keyId
 * @returns {[string, string]|null}
 */
export function parseChannelKeyId(keyId) {
  if (typeof keyId !== "string" || keyId.length > MAX_CHANNEL_KEY_ID_LEN) return null;
  const at = keyId.indexOf("/");
  if (at < 0) return null;
  const epoch = keyId.slice(0, at);
  const part = keyId.slice(at + 1);
  if (parseKeyId(epoch) === null) return null;
  const match = PART_RE.exec(part);
  if (match === null || (match[1] !== undefined && Number(match[1]) > MAX_EPOCH)) return null;
  return [epoch, part];
}

/** The circle epoch key id a key id is under (itself for a circle epoch's). */
export function epochOfKeyId(keyId) {
  const at = keyId.indexOf("/");
  return at < 0 ? keyId : keyId.slice(0, at);
}

/** What a channel epoch's wrap is bound to: the circle, channel, CHANNEL_KEY_EVT, member. */
export function channelWrapContext(circleId, channelId, eventId, nodeId) {
  return `${circleId}|${channelId}|${eventId}|${nodeId}`;
}

/**
 * Channel epoch n of a private invite channel after parent (channel epoch n-1's id, ""
 * for n = 1): its secret wrapped to each member (felund/v1/events.py channel_key_event).
 * @param {string} channelId
 * @param {number} n
 * @param {string} parent
 * @param {Object<string, string>} wraps node id -> wrapped secret
 * @returns {object}
 */
export function channelKeyEvent(channelId, n, parent, wraps) {
  if (n < 1 || (n === 1) !== (parent === "")) {
    throw new Error("channel epoch 1 has no parent, every later one an epoch id");
  }
  const sorted = {};
  for (const id of Object.keys(wraps).sort()) sorted[id] = wraps[id];
  return { channel_id: channelId, epoch: n, parent, t: "CHANNEL_KEY_EVT", wraps: sorted };
}

/**
 * The members of a channel a channel epoch is wrapped to: not removed from the circle,
 * with a usable X25519 key announced (node id -> key).
 * @param {import("./chatmodel.js").CircleState} state
 * @param {object} channel
 * @returns {Promise<Map<string, Uint8Array>>}
 */
export async function recipients(state, channel) {
  const out = new Map();
  for (const node of [...channel.members].sort()) {
    const xpk = state.xkeys.get(node);
    if (state.removed.has(node) || xpk === undefined) continue;
    if ((await xpkOf(b64encode(xpk))) !== null) out.set(node, xpk);
  }
  return out;
}

/**
 * The private invite channels whose next epoch `me` writes now (felund/store/channelkeys.py
 * rekeys_due): a member allowed to write one (its creator, the owner, a moderator) writes
 * it when a member that can unwrap lacks a wrap, or one went to a node that left or was
 * removed; not for a member whose key it has not seen yet (two writers would undo each other's).
 * @param {import("./chatmodel.js").CircleState} state
 * @param {string} me
 * @returns {Promise<string[]>}
 */
export async function rekeysDue(state, me) {
  const due = [];
  for (const channel of state.channels.values()) {
    if (
      !channel.private ||
      channel.accessMode !== "invite" ||
      !channel.members.has(me) ||
      state.removed.has(me) ||
      (me !== channel.creator && !state.moderates(me))
    ) {
      continue;
    }
    const wanted = [...(await recipients(state, channel)).keys()];
    const tip = channel.keys.length ? channel.keys[channel.keys.length - 1] : null;
    const wrapped = tip ? new Set(tip.wraps.keys()) : new Set();
    const gone = [...wrapped].some((n) => !channel.members.has(n) || state.removed.has(n));
    if (wanted.length && (tip === null || wanted.some((n) => !wrapped.has(n)) || gone)) {
      due.push(channel.channelId);
    }
  }
  return due.sort();
}

/** Why this page cannot write in a private channel it is a member of (channelkeys.cannot_seal). */
export function cannotSeal(channel) {
  const name = channel.channelId;
  if (channel.accessMode === "key") {
    return `#${name} is private and this browser does not hold its key: join it with the key (/channel join ${name} KEY)`;
  }
  return (
    `#${name} is private and this browser does not hold its newest key yet: it comes ` +
    "from its owner or a moderator once they have seen you approved; try again soon"
  );
}

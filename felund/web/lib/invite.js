// Invite codes of the felund v1 wire format: "felund1." + base64url(JSON) (felund/v1/invite.py),
// and the codes of an epoch after a removal, which also name the circle and epoch.

import { b64urlDecode, b64urlEncode, cpLength, utf8, utf8Decode } from "./bytes.js";
import { JsonError, isInt, isObject, loads } from "./pyjson.js";
import { CIRCLE_ID_LEN, MSG_ID_LEN, isHex } from "./ids.js";
import { MAX_EPOCH } from "./wrap.js";

export const INVITE_PREFIX = "felund1.";
export const MAX_INVITE_LEN = 4096;
export const MAX_PEER_LEN = 1024;

const B64URL_RE = /^[A-Za-z0-9_-]+={0,2}$/;
const ANY_HEX_RE = /^[0-9a-fA-F]+$/;
const HOST_RE = /^(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}(?:%[A-Za-z0-9_.-]{1,32})?\])$/;
const PORT_RE = /^[0-9]{1,5}$/;
const URL_PREFIXES = ["http://", "https://", "//"];
// A code of epoch n > 0 names its circle and epoch: its secret derives neither.
const EPOCH_KEYS = ["circle_id", "epoch", "epoch_id"];
// Python's str.strip() whitespace (str.isspace), which differs from String.trim().
const PY_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP_RE = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
// Python's str.isprintable(): false for any char of these categories but the space.
const NOT_PRINTABLE_RE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

/**
 * Python's str.strip(): whitespace removed from both ends.
 * @param {string} s
 * @returns {string}
 */
export function pyStrip(s) {
  return s.replace(STRIP_RE, "");
}

/**
 * Python's str.isprintable().
 * @param {string} s
 * @returns {boolean}
 */
export function isPrintable(s) {
  return !NOT_PRINTABLE_RE.test(s.replaceAll(" ", ""));
}

/** A code that is not a valid invite; .message is a sentence to show the user. */
export class InviteError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "InviteError";
  }
}

/**
 * Whether peer is a valid host:port (port 1-65535).
 * @param {string} peer
 * @returns {boolean}
 */
export function isTcpPeer(peer) {
  const at = peer.lastIndexOf(":");
  if (at < 0) return false;
  const host = peer.slice(0, at);
  const port = peer.slice(at + 1);
  if (!HOST_RE.test(host) || !PORT_RE.test(port)) return false;
  const n = Number(port);
  return n >= 1 && n <= 65535;
}

/**
 * Whether peer is a relay URL (http://, https:// or //, then a host).
 * @param {string} peer
 * @returns {boolean}
 */
export function isUrlPeer(peer) {
  const lowered = peer.toLowerCase();
  for (const prefix of URL_PREFIXES) {
    if (lowered.startsWith(prefix)) {
      const rest = peer.slice(prefix.length);
      // It ends up in requests and logs: no spaces or control chars.
      return rest !== "" && !rest.startsWith("/") && isPrintable(rest) && !rest.includes(" ");
    }
  }
  return false;
}

function peerProblem(peer) {
  if (peer === "") return null;
  if (cpLength(peer) > MAX_PEER_LEN) return "invite peer address is too long";
  if (isUrlPeer(peer) || isTcpPeer(peer)) return null;
  return "invite peer must be host:port (port 1-65535) or an http(s):// relay URL";
}

// What is wrong with the epoch part of an invite (all of EPOCH_KEYS, or none), as invite.py.
function epochProblem(data) {
  const present = EPOCH_KEYS.filter((k) => Object.hasOwn(data, k));
  if (present.length === 0) return null;
  if (present.length !== EPOCH_KEYS.length) {
    return "invite names an epoch but lacks its circle_id, epoch or epoch_id";
  }
  const epoch = data.epoch;
  if (!isInt(epoch) || !(Number(epoch) >= 1 && Number(epoch) <= MAX_EPOCH)) {
    return `invite epoch must be a whole number from 1 to ${MAX_EPOCH}`;
  }
  if (!isHex(data.circle_id, CIRCLE_ID_LEN)) {
    return `invite circle_id must be ${CIRCLE_ID_LEN} lowercase hex characters`;
  }
  if (!isHex(data.epoch_id, MSG_ID_LEN)) {
    return `invite epoch_id must be ${MSG_ID_LEN} lowercase hex characters`;
  }
  return null;
}

/**
 * The invite code of a secret and a peer (host:port, relay URL, or ""), and for epoch
 * n > 0 its circle and epoch id (the v1 form without).
 * @param {string} secretHex 64 hex chars
 * @param {string} peer
 * @param {{circleId?: string, epoch?: number, epochId?: string}} [epochOf]
 * @returns {string}
 * @throws {InviteError} when any is invalid
 */
export function encodeInvite(secretHex, peer = "", { circleId = "", epoch = 0, epochId = "" } = {}) {
  if (typeof secretHex !== "string" || secretHex.length !== 64 || !ANY_HEX_RE.test(secretHex)) {
    throw new InviteError("circle secret must be 64 hex characters");
  }
  if (typeof peer !== "string") throw new InviteError("invite peer must be text");
  let problem = peerProblem(peer);
  if (problem !== null) throw new InviteError(problem);
  // Key order and compact separators as the reference writes them (json.dumps, ensure_ascii).
  let payload = `{"v":1,"secret":${JSON.stringify(secretHex.toLowerCase())},"peer":${asciiJson(peer)}`;
  if (circleId !== "" || epoch !== 0 || epochId !== "") {
    problem = epochProblem({ circle_id: circleId, epoch, epoch_id: epochId });
    if (problem !== null) throw new InviteError(problem);
    payload += `,"circle_id":"${circleId}","epoch":${epoch},"epoch_id":"${epochId}"`;
  }
  return INVITE_PREFIX + b64urlEncode(utf8(payload + "}"));
}

function asciiJson(s) {
  return JSON.stringify(s).replace(
    /[\u007f-\uffff]/g,
    (ch) => "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}

/**
 * Decode an invite code (surrounding whitespace ignored).
 * @param {string} code
 * @returns {{secret: string, peer: string, circleId: string, epoch: number, epochId: string}}
 *   secret in lowercase; circleId, epoch, epochId: "", 0, "" but in a code of an epoch
 * @throws {InviteError} with a human-readable reason, exactly where felund/invite.py refuses
 */
export function decodeInvite(code) {
  if (typeof code !== "string") throw new InviteError("invite code must be text");
  code = pyStrip(code);
  if (cpLength(code) > MAX_INVITE_LEN) throw new InviteError("invite code is too long");
  if (!code.startsWith(INVITE_PREFIX)) {
    throw new InviteError("not a felund invite code (it must start with 'felund1.')");
  }
  const body = code.slice(INVITE_PREFIX.length);
  if (!B64URL_RE.test(body)) throw new InviteError("invite code is damaged (bad base64)");
  let raw;
  try {
    raw = b64urlDecode(body);
  } catch {
    throw new InviteError("invite code is damaged (bad base64)");
  }
  let data;
  try {
    data = loads(utf8Decode(raw));
  } catch (e) {
    if (e instanceof JsonError || e instanceof TypeError) {
      throw new InviteError("invite code is damaged (bad JSON)");
    }
    throw e;
  }
  if (!isObject(data)) throw new InviteError("invite code is damaged (not a JSON object)");
  const version = data.v;
  if (!isInt(version) || Number(version) !== 1) {
    throw new InviteError("unsupported invite version (only v=1 is understood)");
  }
  const secret = Object.hasOwn(data, "secret") ? data.secret : null;
  if (typeof secret !== "string" || secret === "") {
    throw new InviteError("invite has no circle secret");
  }
  if (!ANY_HEX_RE.test(secret)) throw new InviteError("invite secret is not hex");
  const peer = Object.hasOwn(data, "peer") ? data.peer : "";
  if (typeof peer !== "string") throw new InviteError("invite peer must be text");
  const problem = peerProblem(peer);
  if (problem !== null) throw new InviteError(problem);
  // After the peer, so that each rejection reports its own cause, as the reference does.
  if (secret.length !== 64) throw new InviteError("invite secret must be 64 hex characters");
  const epochWrong = epochProblem(data);
  if (epochWrong !== null) throw new InviteError(epochWrong);
  const epoch = Object.hasOwn(data, "epoch")
    ? { circleId: data.circle_id, epoch: Number(data.epoch), epochId: data.epoch_id }
    : { circleId: "", epoch: 0, epochId: "" };
  return { secret: secret.toLowerCase(), peer, ...epoch };
}

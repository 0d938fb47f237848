// Identifiers of the felund v1 wire format (felund/ids.py).

import { randomBytes, randomHex } from "./bytes.js";
import { secretBytes, sha256Hex } from "./crypto.js";

export const SECRET_HEX_LEN = 64;
export const CIRCLE_ID_LEN = 24;
export const CIRCLE_HINT_LEN = 16;
export const NODE_ID_LEN = 24;
export const WEB_NODE_ID_LEN = 32; // the other implementation's browser (addendum §5)
export const MSG_ID_LEN = 32;

// Lowercase only: the spec writes hex in lowercase, and two spellings of one id must not coexist.
const HEX_RE = /^[0-9a-f]+$/;

/**
 * Whether s is non-empty lowercase hex, of exactly len chars if len is given.
 * @param {any} s
 * @param {number} [len]
 * @returns {boolean}
 */
export function isHex(s, len) {
  if (typeof s !== "string" || s === "") return false;
  if (len !== undefined && len !== null && s.length !== len) return false;
  return HEX_RE.test(s);
}

/**
 * Whether s is a well-formed node id: 24 lowercase hex, or 32 (a v1 browser's).
 * @param {any} s
 * @returns {boolean}
 */
export function isNodeId(s) {
  return isHex(s, NODE_ID_LEN) || isHex(s, WEB_NODE_ID_LEN);
}

/**
 * A fresh circle secret: 32 random bytes as 64 lowercase hex chars.
 * @returns {string}
 */
export function newSecret() {
  return randomHex(32);
}

/**
 * The circle id: the first 24 hex chars of SHA-256 of the secret bytes.
 * @param {string} secretHex
 * @returns {Promise<string>}
 * @throws {TypeError} unless secretHex is 64 lowercase hex chars
 */
export async function circleId(secretHex) {
  return (await sha256Hex(secretBytes(secretHex))).slice(0, CIRCLE_ID_LEN);
}

/**
 * The relay hint: the first 16 hex chars of SHA-256 of the circle id text.
 * @param {string} circleId
 * @returns {Promise<string>}
 */
export async function circleHint(circleId) {
  return (await sha256Hex(circleId)).slice(0, CIRCLE_HINT_LEN);
}

/**
 * A fresh node id: the first 24 hex chars of SHA-256 of 32 random bytes.
 * @returns {Promise<string>}
 */
export async function newNodeId() {
  return (await sha256Hex(randomBytes(32))).slice(0, NODE_ID_LEN);
}

/**
 * A fresh message id: 32 hex chars of SHA-256 of `node_id|created_ts|16 random hex`.
 * @param {string} nodeId
 * @param {number} createdTs
 * @returns {Promise<string>}
 */
export async function newMsgId(nodeId, createdTs) {
  return (await sha256Hex(`${nodeId}|${createdTs}|${randomHex(8)}`)).slice(0, MSG_ID_LEN);
}

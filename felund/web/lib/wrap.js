// An epoch secret wrapped to one member's X25519 key, and the enc key ids of
// epochs: a port of felund/trust/wrap.py, held to the same bytes by
// tests/vectors/felund-epoch-v1.json.
//
// A wrap is std base64 of eph_pub(32) || nonce(12) || AES-256-GCM(secret)+tag:
// an ephemeral X25519 key agrees with the recipient's, HKDF-SHA256 makes the AES
// key (salt: both public keys; info: "felund-wrap-v1|" + context), and the
// context is the associated data too. The browser's X25519 key is its own,
// drawn by WebCrypto and non-extractable (Python derives its key from the
// identity seed; a page has no seed to read).

import { b64encode, concat, hexToBytes, isWellFormed, randomBytes, utf8 } from "./bytes.js";
import { DecryptError, aesGcmDecrypt, aesGcmEncrypt, hkdf } from "./crypto.js";
import { importPrivate, unb64 } from "./trust.js";

const subtle = globalThis.crypto.subtle;
const X25519 = { name: "X25519" };

export const XPK_LEN = 32;
export const SECRET_LEN = 32;
const NONCE_LEN = 12;
const TAG_LEN = 16;
export const WRAPPED_LEN = XPK_LEN + NONCE_LEN + SECRET_LEN + TAG_LEN; // 92 bytes
const WRAP_INFO = "felund-wrap-v1|";
export const MAX_EPOCH = 2 ** 31;
/** Epoch 0: the invite's secret, as v1 seals (wire.js ENC_KEY_ID). */
export const ROOT_KEY_ID = "epoch-0";
/** "e" + the largest epoch + "." + an epoch id (the msg_id of its EPOCH_EVT). */
export const MAX_KEY_ID_LEN = 1 + String(MAX_EPOCH).length + 1 + 32;
const KEY_ID_RE = /^e([1-9][0-9]{0,9})\.([0-9a-f]{32})$/;
// The PKCS#8 wrapping of a raw X25519 private key (RFC 8410): for the vectors' keys only.
const PKCS8_PREFIX = hexToBytes("302e020100300506032b656e04220420");

/**
 * @typedef {object} XKey an X25519 key of ours
 * @property {CryptoKey} privateKey non-extractable (kept in IndexedDB as it is)
 * @property {Uint8Array} publicKey the raw 32 bytes, announced as xpk
 */

/**
 * A fresh X25519 key whose private half never leaves WebCrypto.
 * @returns {Promise<XKey>}
 */
export async function generateXKey() {
  const pair = await subtle.generateKey(X25519, false, ["deriveBits"]);
  const publicKey = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

/**
 * The key of raw private bytes (the vectors' keys, a wrap's fixed ephemeral key in tests).
 * @param {Uint8Array} raw 32 bytes
 * @returns {Promise<XKey>}
 */
export async function xKeyFromPrivate(raw) {
  if (raw.length !== 32) throw new TypeError("an X25519 private key is 32 bytes");
  return importPrivate(X25519, PKCS8_PREFIX, raw, ["deriveBits"]);
}

/**
 * What a wrap is bound to: the circle, the epoch (its EPOCH_EVT's id) and the recipient.
 * @param {string} circleId
 * @param {string} epochId
 * @param {string} nodeId
 * @returns {string}
 */
export function wrapContext(circleId, epochId, nodeId) {
  return `${circleId}|${epochId}|${nodeId}`;
}

// The shared secret of our private key and a raw public key; throws on a low-order point
// (WebCrypto refuses an all-zero result, as Python's cryptography does).
async function agree(privateKey, publicRaw) {
  const pub = await subtle.importKey("raw", publicRaw, X25519, true, []);
  return new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, privateKey, 256));
}

let probe = null; // a fixed key, to try a public key against

async function usable(xpk) {
  probe ??= xKeyFromPrivate(new Uint8Array(32).fill(1));
  try {
    await agree((await probe).privateKey, xpk);
    return true;
  } catch {
    return false;
  }
}

/**
 * The X25519 public key of a KEY_ANNOUNCE's xpk (std base64 of 32 bytes); null if it is
 * not one or is a low-order point no secret can be wrapped to.
 * @param {any} text
 * @returns {Promise<Uint8Array|null>}
 */
export async function xpkOf(text) {
  const raw = unb64(text, XPK_LEN);
  return raw !== null && (await usable(raw)) ? raw : null;
}

function aesKeyOf(shared, ephPub, recipientXpk, context) {
  return hkdf(shared, concat(ephPub, recipientXpk), WRAP_INFO + context, 32);
}

/**
 * `secret` (32 bytes) wrapped to `recipientXpk` for `context` (wrapContext); the
 * ephemeral key and nonce are fresh unless given (the vectors).
 * @param {Uint8Array} secret
 * @param {Uint8Array} recipientXpk
 * @param {string} context
 * @param {{ephemeral?: XKey, nonce?: Uint8Array}} [fixed]
 * @returns {Promise<string>}
 * @throws {TypeError} a secret not of 32 bytes, a key not usable, a context not UTF-8
 */
export async function wrap(secret, recipientXpk, context, { ephemeral, nonce } = {}) {
  if (!(secret instanceof Uint8Array) || secret.length !== SECRET_LEN) {
    throw new TypeError("an epoch secret is 32 bytes");
  }
  const xpk = recipientXpk instanceof Uint8Array && recipientXpk.length === XPK_LEN;
  if (!xpk || !(await usable(recipientXpk))) throw new TypeError("not a usable X25519 public key");
  if (!isWellFormed(context)) throw new TypeError("a wrap's context is UTF-8 text");
  const eph = ephemeral ?? (await generateXKey());
  const iv = nonce ?? randomBytes(NONCE_LEN);
  const shared = await agree(eph.privateKey, recipientXpk);
  const key = await aesKeyOf(shared, eph.publicKey, recipientXpk, context);
  return b64encode(concat(eph.publicKey, iv, await aesGcmEncrypt(key, iv, secret, utf8(context))));
}

/**
 * The 32-byte secret a wrap holds for our key and `context`; null for anything that does
 * not open (another key, context or length, tampered, not base64). Never throws.
 * @param {XKey} xKey ours
 * @param {any} wrapped
 * @param {string} context
 * @returns {Promise<Uint8Array|null>}
 */
export async function unwrap(xKey, wrapped, context) {
  const raw = unb64(wrapped, WRAPPED_LEN);
  if (raw === null || typeof context !== "string" || !isWellFormed(context)) return null;
  const ephPub = raw.subarray(0, XPK_LEN);
  const iv = raw.slice(XPK_LEN, XPK_LEN + NONCE_LEN);
  try {
    const shared = await agree(xKey.privateKey, ephPub);
    const key = await aesKeyOf(shared, ephPub, xKey.publicKey, context);
    return await aesGcmDecrypt(key, iv, raw.subarray(XPK_LEN + NONCE_LEN), utf8(context));
  } catch (e) {
    if (e instanceof DecryptError || e instanceof DOMException) return null;
    throw e;
  }
}

/**
 * The enc.key_id of epoch n: "e<n>.<epochId>", or "epoch-0" for the root (n 0, epochId "").
 * @param {number} n
 * @param {string} epochId
 * @returns {string}
 * @throws {TypeError} for anything parseKeyId would not give back
 */
export function epochKeyId(n, epochId) {
  if (n === 0 && epochId === "") return ROOT_KEY_ID;
  const keyId = `e${n}.${epochId}`;
  const back = Number.isInteger(n) ? parseKeyId(keyId) : null;
  if (back === null || back.n !== n || back.epochId !== epochId) {
    throw new TypeError("an epoch is 1..2^31 and its id 32 lowercase hex");
  }
  return keyId;
}

/**
 * The epoch an enc.key_id names: {n: 0, epochId: ""} for "epoch-0"; null if it is not one.
 * @param {any} keyId
 * @returns {{n: number, epochId: string}|null}
 */
export function parseKeyId(keyId) {
  if (keyId === ROOT_KEY_ID) return { n: 0, epochId: "" };
  if (typeof keyId !== "string" || keyId.length > MAX_KEY_ID_LEN) return null;
  const match = KEY_ID_RE.exec(keyId);
  if (match === null || Number(match[1]) > MAX_EPOCH) return null;
  return { n: Number(match[1]), epochId: match[2] };
}

// Who said it, in the browser: the identity key, the signed bytes of a
// message, a reader's verdict and the circle owner's proof. A port of
// felund/trust/ (identity.py, signing.py, batch.py, owner.py), held to the same bytes by
// tests/vectors/felund-trust-v1.json.
//
// The private key is a WebCrypto Ed25519 key made non-extractable: the page
// can sign with it, and neither the page nor anyone who reads IndexedDB can
// read it out. A signature travels inside a message's enc plaintext, beside
// display_name and text (wire.js), so v1 peers still get exactly the v1 keys.

import {
  b64decode,
  b64encode,
  b64urlDecode,
  bytesToHex,
  concat,
  hexToBytes,
  randomHex,
  utf8,
} from "./bytes.js";
import { secretBytes } from "./crypto.js";
import { NODE_ID_LEN, isHex } from "./ids.js";
import { sha256 } from "./sha256.js";
import { InvalidMessage } from "./errors.js";

const subtle = globalThis.crypto.subtle;
const ED25519 = { name: "Ed25519" };

export const PUBLIC_KEY_LEN = 32;
export const SIGNATURE_LEN = 64;
/** A derived id begins with this (felund/trust/identity.py): only its own key signs for it. */
export const DERIVED_MARK = "fe";
export const SIG_CONTEXT = "felund-sig-v1";
export const OWNER_CONTEXT = "felund-owner-v1";
export const SALT_HEX_LEN = 64;
/** What a reader concludes of a well-formed message's author (signing.Verdict). */
export const Verdict = Object.freeze({
  UNSIGNED: "unsigned",
  VERIFIED: "verified",
  FIRST_SIGHT: "first_sight",
});
// The PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410): WebCrypto imports
// a private key only so, never raw.
const PKCS8_PREFIX = hexToBytes("302e020100300506032b657004220420");
// A message whose id has the derived mark but is not its key's: one draw in 256 keeps it.
const MAX_DRAWS = 100000;

/**
 * Whether an id is of the derived form: only the key it derives from signs for it.
 * @param {string} nodeId
 * @returns {boolean}
 */
export function isDerivedForm(nodeId) {
  return typeof nodeId === "string" && nodeId.startsWith(DERIVED_MARK);
}

/**
 * The node id a key derives: the first 24 hex of SHA-256 of the raw public key.
 * @param {Uint8Array} publicKey
 * @returns {string}
 */
export function nodeIdOf(publicKey) {
  return bytesToHex(sha256(publicKey)).slice(0, NODE_ID_LEN);
}

/**
 * A key as people compare it: 32 hex of SHA-256 in groups of four.
 * @param {Uint8Array} publicKey
 * @returns {string}
 */
export function fingerprint(publicKey) {
  const digest = bytesToHex(sha256(concat(utf8("felund-fingerprint-v1"), publicKey))).slice(0, 32);
  return digest.match(/.{4}/g).join(" ");
}

/**
 * The bytes of a std base64 string of exactly `length` bytes, or null (identity.unb64).
 * @param {any} text
 * @param {number} length
 * @returns {Uint8Array|null}
 */
export function unb64(text, length) {
  if (typeof text !== "string" || text.length !== 4 * Math.ceil(length / 3)) return null;
  try {
    const raw = b64decode(text);
    return raw.length === length ? raw : null;
  } catch {
    return null;
  }
}

/**
 * @typedef {object} IdentityKey a browser's signing key (identity.IdentityKey)
 * @property {CryptoKey} privateKey Ed25519, non-extractable (kept in IndexedDB as it is)
 * @property {Uint8Array} publicKey the raw 32 bytes
 */

/**
 * A fresh key whose node id has the derived mark (about 256 draws, as identity.generate).
 * @returns {Promise<IdentityKey>}
 */
export async function generateKey() {
  for (let i = 0; i < MAX_DRAWS; i++) {
    const pair = await subtle.generateKey(ED25519, false, ["sign", "verify"]);
    const publicKey = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
    if (isDerivedForm(nodeIdOf(publicKey))) return { privateKey: pair.privateKey, publicKey };
  }
  throw new Error("no key with the derived mark was drawn"); // 2^-780: never
}

/**
 * The key of a 32-byte seed (identity.from_seed), for the vectors and tests.
 * @param {Uint8Array} seed
 * @returns {Promise<IdentityKey>}
 */
export async function keyFromSeed(seed) {
  if (seed.length !== 32) throw new TypeError("an Ed25519 seed is 32 bytes");
  return importPrivate(ED25519, PKCS8_PREFIX, seed, ["sign"]);
}

/**
 * A raw private key (Ed25519 seed, X25519 scalar) in its PKCS#8 wrapping `pkcs8Prefix`,
 * imported non-extractable, with its raw public half: for the vectors and tests.
 * @param {object} algorithm
 * @param {Uint8Array} pkcs8Prefix
 * @param {Uint8Array} raw
 * @param {string[]} usages
 * @returns {Promise<{privateKey: CryptoKey, publicKey: Uint8Array}>}
 */
export async function importPrivate(algorithm, pkcs8Prefix, raw, usages) {
  const pkcs8 = concat(pkcs8Prefix, raw);
  // Extractable only for the moment it takes to read the public half (jwk x).
  const open = await subtle.importKey("pkcs8", pkcs8, algorithm, true, usages);
  const publicKey = b64urlDecode((await subtle.exportKey("jwk", open)).x);
  const privateKey = await subtle.importKey("pkcs8", pkcs8, algorithm, false, usages);
  return { privateKey, publicKey };
}

/**
 * Whether a node of `nodeId` can sign with `key`: its own derived id, or an older id without the mark.
 * @param {IdentityKey} key
 * @param {string} nodeId
 * @returns {boolean}
 */
export function maySign(key, nodeId) {
  return nodeId === nodeIdOf(key.publicKey) || !isDerivedForm(nodeId);
}

/**
 * @typedef {object} SignedFields the seven signed fields of a message
 * @property {string} msgId
 * @property {string} circleId
 * @property {string} channelId
 * @property {string} authorNodeId
 * @property {number} createdTs
 * @property {string} displayName
 * @property {string} text
 */

/**
 * The bytes an author signs: the context and seven fields, each a u32 big-endian length and its UTF-8.
 * @param {SignedFields} f
 * @returns {Uint8Array}
 */
export function signingBytes(f) {
  const fields = [SIG_CONTEXT, f.msgId, f.circleId, f.channelId, f.authorNodeId];
  fields.push(String(f.createdTs), f.displayName, f.text);
  const parts = [];
  for (const field of fields) {
    const raw = utf8(field);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, raw.length);
    parts.push(len, raw);
  }
  return concat(...parts);
}

/**
 * The Ed25519 signature of data.
 * @param {IdentityKey} key
 * @param {Uint8Array} data
 * @returns {Promise<Uint8Array>} 64 bytes
 */
export async function sign(key, data) {
  return new Uint8Array(await subtle.sign(ED25519, key.privateKey, data));
}

/**
 * The `pk` and `sig` entries to add to a message's plaintext (signing.sign_fields).
 * @param {IdentityKey} key
 * @param {SignedFields} fields
 * @returns {Promise<{pk: string, sig: string}>}
 */
export async function signFields(key, fields) {
  return { pk: b64encode(key.publicKey), sig: b64encode(await sign(key, signingBytes(fields))) };
}

// Imported public keys by base64: a backlog has few authors, and an import costs about a verify.
const publicKeys = new Map();
const MAX_CACHED_KEYS = 4096;

function publicKey(raw) {
  const id = b64encode(raw);
  let hit = publicKeys.get(id);
  if (hit === undefined) {
    hit = subtle.importKey("raw", raw, ED25519, false, ["verify"]);
    hit.catch(() => publicKeys.delete(id));
    if (publicKeys.size >= MAX_CACHED_KEYS) publicKeys.delete(publicKeys.keys().next().value);
    publicKeys.set(id, hit);
  }
  return hit;
}

/**
 * Whether sig is the Ed25519 signature of data by the raw public key pk.
 * @param {Uint8Array} pk
 * @param {Uint8Array} sig
 * @param {Uint8Array} data
 * @returns {Promise<boolean>}
 */
export async function verify(pk, sig, data) {
  try {
    return await subtle.verify(ED25519, await publicKey(pk), sig, data);
  } catch {
    return false; // a 32-byte string that is no point on the curve
  }
}

// --- batch signatures (felund/trust/batch.py: the tree is defined there) ---------------
/** Messages under one batch signature at most. */
export const BATCH_LEAVES = 64;
/** Hashes in a path at most: log2(BATCH_LEAVES). */
export const MAX_PATH = 6;
const HASH_LEN = 32;
const LEAF_CONTEXT = utf8("felund-leaf-v1");
const NODE_CONTEXT = utf8("felund-node-v1");
const BATCH_CONTEXT = utf8("felund-batch-v1");

function u32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

function bitCount(n) {
  let count = 0;
  for (let rest = n; rest > 0; rest >>= 1) count += rest & 1;
  return count;
}

/**
 * The leaf of the message of signing bytes `data` at `index` in its batch (batch.leaf_hash).
 * @param {number} index
 * @param {Uint8Array} data
 * @returns {Uint8Array}
 */
export function leafHash(index, data) {
  return sha256(concat(LEAF_CONTEXT, u32(index), data));
}

/**
 * The bytes signed for a batch: its context, length-prefixed, and its root (batch.batch_bytes).
 * @param {Uint8Array} root
 * @returns {Uint8Array}
 */
export function batchBytes(root) {
  return concat(u32(BATCH_CONTEXT.length), BATCH_CONTEXT, root);
}

/**
 * Whether a leaf index and a path of so many hashes can belong to a batch (batch.path_fits).
 * @param {number} index
 * @param {number} hashes
 * @returns {boolean}
 */
export function pathFits(index, hashes) {
  return (
    Number.isInteger(index) && index >= 0 && index < BATCH_LEAVES &&
    hashes > 0 && bitCount(index) <= hashes && hashes <= MAX_PATH
  );
}

/**
 * The root a leaf at `index` reaches by `path` (batch.root_of): at level k, bit k of
 * the index set means a left sibling; the lowest (hashes - popcount) zero bits a right
 * one; the other zero bits a promotion.
 * @param {Uint8Array} leaf
 * @param {number} index
 * @param {Uint8Array} path of a shape pathFits admits
 * @returns {Uint8Array}
 */
export function rootOf(leaf, index, path) {
  let rights = path.length / HASH_LEN - bitCount(index);
  let node = leaf;
  // Bounded whatever the shape: one that pathFits admits is used up below level 6.
  for (let used = 0, level = 0; used < path.length && level < MAX_PATH; level++) {
    const sibling = path.subarray(used, used + HASH_LEN);
    if ((index >> level) & 1) {
      node = sha256(concat(NODE_CONTEXT, sibling, node));
      used += HASH_LEN;
    } else if (rights > 0) {
      node = sha256(concat(NODE_CONTEXT, node, sibling));
      used += HASH_LEN;
      rights--;
    }
  }
  return node;
}

// Verified batch roots, as felund/trust/signing.py keeps them: a batch's other
// messages reach the same root, so one verify serves them all. Bounded, oldest out.
const verifiedRoots = new Map();
const MAX_VERIFIED_ROOTS = 4096;

async function rootSigned(pk, sig, root) {
  const id = `${b64encode(pk)} ${b64encode(sig)} ${bytesToHex(root)}`;
  if (verifiedRoots.has(id)) {
    verifiedRoots.delete(id); // refreshed: the newest stays longest
    verifiedRoots.set(id, true);
    return true;
  }
  const ok = await verify(pk, sig, batchBytes(root));
  if (ok) {
    if (verifiedRoots.size >= MAX_VERIFIED_ROOTS) verifiedRoots.delete(verifiedRoots.keys().next().value);
    verifiedRoots.set(id, true);
  }
  return ok;
}

// A path's std base64 length for each count of hashes it may hold.
const PATH_HASHES = new Map(
  Array.from({ length: MAX_PATH }, (_, i) => [4 * Math.ceil(((i + 1) * HASH_LEN) / 3), i + 1]),
);

function pathOf(text) {
  const hashes = typeof text === "string" ? PATH_HASHES.get(text.length) : undefined;
  return hashes === undefined ? null : unb64(text, hashes * HASH_LEN);
}

/**
 * The signature a plaintext carries: null if unsigned (signing.signature_of). In the
 * batch form it has the leaf index and the path; in the single form these are null.
 * @param {object} plain the decrypted {display_name, text[, pk, sig[, leaf, path]]}
 * @returns {{pk: Uint8Array, sig: Uint8Array, leaf: number|null, path: Uint8Array|null}|null}
 * @throws {InvalidMessage} kind "signature" if malformed
 */
export function signatureOf(plain) {
  // Absent or null alike, as Python's dict.get reads them.
  const field = (key) => (Object.hasOwn(plain, key) ? plain[key] : null);
  const pkText = field("pk");
  const sigText = field("sig");
  if (pkText === null && sigText === null && field("leaf") === null && field("path") === null) {
    return null;
  }
  const pk = unb64(pkText, PUBLIC_KEY_LEN);
  const sig = unb64(sigText, SIGNATURE_LEN);
  if (pk === null || sig === null) {
    throw new InvalidMessage("signature", "pk and sig must be a 32- and a 64-byte base64 pair");
  }
  if (!Object.hasOwn(plain, "leaf") && !Object.hasOwn(plain, "path")) {
    return { pk, sig, leaf: null, path: null };
  }
  const leaf = plain.leaf;
  const path = pathOf(plain.path);
  // typeof: pyjson reads a float as a PyFloat and true as a boolean; neither is an index.
  if (path === null || typeof leaf !== "number" || !pathFits(leaf, path.length / HASH_LEN)) {
    throw new InvalidMessage(
      "signature",
      `leaf and path must be an index below ${BATCH_LEAVES} and 1 to ${MAX_PATH} base64 hashes that fit it`,
    );
  }
  return { pk, sig, leaf, path };
}

const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Decide on a message's signature (signing.check). An id of the derived form is
 * signed for only by the key it derives from; an older id by the key pinned for
 * it in this circle (`pinned`) or, at first sight (null), by the key it carries,
 * which the caller then pins. A message of a batch is signed if its leaf and path
 * reach a root that its key signed (verified once, then cached).
 * @param {{pk: Uint8Array, sig: Uint8Array, leaf?: number|null, path?: Uint8Array|null}|null} signed
 * @param {Uint8Array|null} pinned
 * @param {SignedFields} fields
 * @returns {Promise<string>} a Verdict
 * @throws {InvalidMessage} kind "key_mismatch" or "signature": refuse the message
 */
export async function check(signed, pinned, fields) {
  if (signed === null) return Verdict.UNSIGNED;
  const { pk, sig, leaf = null, path = null } = signed;
  const derived = nodeIdOf(pk) === fields.authorNodeId;
  if (!derived && (isDerivedForm(fields.authorNodeId) || (pinned !== null && !sameBytes(pinned, pk)))) {
    throw new InvalidMessage("key_mismatch", "signed by another key than its author's");
  }
  const data = signingBytes(fields);
  const ok =
    leaf === null
      ? await verify(pk, sig, data)
      : await rootSigned(pk, sig, rootOf(leafHash(leaf, data), leaf, path));
  if (!ok) {
    throw new InvalidMessage("signature", "signature does not verify");
  }
  return derived || pinned !== null ? Verdict.VERIFIED : Verdict.FIRST_SIGHT;
}

/**
 * The circle secret (64 hex) that a key and salt commit to (owner.owned_secret).
 * @param {Uint8Array} publicKey
 * @param {string} saltHex 64 hex
 * @returns {string}
 */
export function ownedSecret(publicKey, saltHex) {
  return bytesToHex(sha256(concat(utf8(OWNER_CONTEXT), publicKey, hexToBytes(saltHex))));
}

/**
 * A fresh (secret, salt) for a circle that publicKey creates.
 * @param {Uint8Array} publicKey
 * @returns {{secret: string, salt: string}}
 */
export function newOwnedSecret(publicKey) {
  const salt = randomHex(SALT_HEX_LEN / 2);
  return { secret: ownedSecret(publicKey, salt), salt };
}

/**
 * Whether saltHex shows that publicKey made the circle of secretHex (owner.proves_owner).
 * @param {string} secretHex
 * @param {Uint8Array} publicKey
 * @param {any} saltHex
 * @returns {boolean}
 */
export function provesOwner(secretHex, publicKey, saltHex) {
  if (!isHex(saltHex, SALT_HEX_LEN) || !isHex(secretHex, 64)) return false;
  // Nothing secret is compared here: the secret is every member's, the salt public.
  return ownedSecret(publicKey, saltHex) === bytesToHex(secretBytes(secretHex));
}

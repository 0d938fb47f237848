// The felund v1 primitives on WebCrypto: SHA-256, HMAC-SHA256, HKDF-SHA256, AES-256-GCM.
// Every function is async (WebCrypto is) and gives the bytes the vectors give.

import { bytesToHex, hexToBytes, utf8 } from "./bytes.js";

const subtle = globalThis.crypto.subtle;

/** @param {Uint8Array|string} data */
function asBytes(data) {
  return typeof data === "string" ? utf8(data) : data;
}

/**
 * Hex SHA-256 of bytes, or of a string's UTF-8.
 * @param {Uint8Array|string} bytesOrString
 * @returns {Promise<string>}
 */
export async function sha256Hex(bytesOrString) {
  return bytesToHex(await subtle.digest("SHA-256", asBytes(bytesOrString)));
}

// Imported HMAC keys, by key hex: a circle's secret and signing key sign
// every message and request, and importKey costs more than the HMAC itself.
const hmacKeys = new Map();
const MAX_CACHED_KEYS = 64;

function cached(map, id, make) {
  let hit = map.get(id);
  if (hit === undefined) {
    hit = make();
    // Forget a failed import, so a retry can succeed.
    hit.catch(() => map.delete(id));
    if (map.size >= MAX_CACHED_KEYS) map.delete(map.keys().next().value);
    map.set(id, hit);
  }
  return hit;
}

function hmacKey(keyBytes) {
  return cached(hmacKeys, bytesToHex(keyBytes), () =>
    subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
  );
}

/**
 * Hex HMAC-SHA256 of a string's UTF-8 (or of bytes) under keyBytes.
 * @param {Uint8Array} keyBytes
 * @param {string|Uint8Array} text
 * @returns {Promise<string>}
 */
export async function hmacHex(keyBytes, text) {
  const key = await hmacKey(keyBytes);
  return bytesToHex(await subtle.sign("HMAC", key, asBytes(text)));
}

/**
 * HKDF-SHA256. A null salt is the RFC's default (HashLen zero bytes), as Python's salt=None.
 * @param {Uint8Array} keyBytes
 * @param {Uint8Array|null} saltBytes
 * @param {string} infoString
 * @param {number} length bytes wanted
 * @returns {Promise<Uint8Array>}
 */
export async function hkdf(keyBytes, saltBytes, infoString, length) {
  const ikm = await subtle.importKey("raw", keyBytes, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: saltBytes ?? new Uint8Array(32),
      info: utf8(infoString),
    },
    ikm,
    length * 8,
  );
  return new Uint8Array(bits);
}

const aesKeys = new Map();

function aesKey(keyBytes) {
  if (keyBytes.length !== 32) throw new TypeError("AES-256-GCM key must be 32 bytes");
  return cached(aesKeys, bytesToHex(keyBytes), () =>
    subtle.importKey("raw", keyBytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]),
  );
}

function gcmParams(nonce, aadBytes) {
  if (!(nonce instanceof Uint8Array) || nonce.length !== 12) {
    throw new TypeError("AES-GCM nonce must be 12 bytes");
  }
  const params = { name: "AES-GCM", iv: nonce, tagLength: 128 };
  if (aadBytes) params.additionalData = aadBytes;
  return params;
}

/**
 * AES-256-GCM: ciphertext followed by the 16-byte tag (as Python's AESGCM.encrypt).
 * @param {Uint8Array} keyBytes 32 bytes
 * @param {Uint8Array} nonce 12 bytes
 * @param {Uint8Array} plaintextBytes
 * @param {Uint8Array|null} aadBytes
 * @returns {Promise<Uint8Array>}
 */
export async function aesGcmEncrypt(keyBytes, nonce, plaintextBytes, aadBytes) {
  const key = await aesKey(keyBytes);
  return new Uint8Array(await subtle.encrypt(gcmParams(nonce, aadBytes), key, plaintextBytes));
}

/** Decryption failed: wrong key, nonce, associated data, or a damaged ciphertext. */
export class DecryptError extends Error {
  constructor() {
    super("does not decrypt");
    this.name = "DecryptError";
  }
}

/**
 * AES-256-GCM decryption of ciphertext‖tag.
 * @param {Uint8Array} keyBytes 32 bytes
 * @param {Uint8Array} nonce 12 bytes
 * @param {Uint8Array} sealedBytes ciphertext followed by the tag
 * @param {Uint8Array|null} aadBytes
 * @returns {Promise<Uint8Array>}
 * @throws {DecryptError}
 */
export async function aesGcmDecrypt(keyBytes, nonce, sealedBytes, aadBytes) {
  const key = await aesKey(keyBytes);
  if (sealedBytes.length < 16) throw new DecryptError();
  try {
    return new Uint8Array(await subtle.decrypt(gcmParams(nonce, aadBytes), key, sealedBytes));
  } catch {
    throw new DecryptError();
  }
}

// --- felund v1 derivations ---------------------------------------------------------

const SECRET_RE = /^[0-9a-f]{64}$/;

/**
 * The secret's bytes; TypeError unless it is 64 lowercase hex chars (as felund.ids.secret_bytes).
 * @param {string} secretHex
 * @returns {Uint8Array}
 */
export function secretBytes(secretHex) {
  if (typeof secretHex !== "string" || !SECRET_RE.test(secretHex)) {
    throw new TypeError("circle secret must be 64 lowercase hex characters");
  }
  return hexToBytes(secretHex);
}

const messageKeys = new Map();

/**
 * The AES-256-GCM key of schema 2 messages: HKDF(secret, no salt, "felund-msg-v1", 32).
 * @param {string} secretHex
 * @returns {Promise<Uint8Array>}
 */
export function messageKey(secretHex) {
  const bytes = secretBytes(secretHex);
  return cached(messageKeys, secretHex, () => hkdf(bytes, null, "felund-msg-v1", 32));
}

/**
 * The relay signing key (hex): HMAC-SHA256(secret, "api-v1").
 * @param {string} secretHex
 * @returns {Promise<string>}
 */
export function apiSigningKey(secretHex) {
  return hmacHex(secretBytes(secretHex), "api-v1");
}

/**
 * X-Felund-Signature: hex HMAC(signing key, METHOD + path + sha256hex(body) + ts + nonce).
 * @param {string} signingKeyHex
 * @param {string} method e.g. "POST"
 * @param {string} path the part after /v1, without the query
 * @param {string|Uint8Array} body "" for none
 * @param {number} ts Unix seconds
 * @param {string} nonce
 * @returns {Promise<string>}
 */
export async function apiSignature(signingKeyHex, method, path, body, ts, nonce) {
  const payload = `${method}${path}${await sha256Hex(body)}${ts}${nonce}`;
  return hmacHex(hexToBytes(signingKeyHex), payload);
}

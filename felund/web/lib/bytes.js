// Byte and text helpers shared by every library module (no DOM, no dependencies).

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const B64URL_RE = /^[A-Za-z0-9_-]*={0,2}$/;

const encoder = new TextEncoder();
// fatal: a byte sequence that is not UTF-8 is an error, as Python's strict decode;
// ignoreBOM: keep a leading BOM so that JSON parsing refuses it, as Python's json does.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Decode hex (either case, even length) into bytes.
 * @param {string} hex
 * @returns {Uint8Array}
 * @throws {TypeError} when hex is not hex of even length
 */
export function hexToBytes(hex) {
  if (typeof hex !== "string" || !HEX_RE.test(hex)) {
    throw new TypeError("not hex of even length");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/**
 * Lowercase hex of bytes.
 * @param {Uint8Array|ArrayBuffer} u8
 * @returns {string}
 */
export function bytesToHex(u8) {
  const bytes = u8 instanceof Uint8Array ? u8 : new Uint8Array(u8);
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

function binaryString(bytes) {
  // In chunks: String.fromCharCode(...big array) overflows the call stack.
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return s;
}

/**
 * Standard base64 with padding.
 * @param {Uint8Array} u8
 * @returns {string}
 */
export function b64encode(u8) {
  return btoa(binaryString(u8 instanceof Uint8Array ? u8 : new Uint8Array(u8)));
}

/**
 * Strict standard base64 (alphabet, final padding, length a multiple of 4), as
 * Python's base64.b64decode(validate=True) after felund's regex check.
 * @param {string} str
 * @returns {Uint8Array}
 * @throws {TypeError} on anything else
 */
export function b64decode(str) {
  if (typeof str !== "string" || !B64_RE.test(str) || str.length % 4 !== 0) {
    throw new TypeError("bad base64");
  }
  return fromBinary(atob(str));
}

function fromBinary(bin) {
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * URL-safe base64 without padding.
 * @param {Uint8Array} u8
 * @returns {string}
 */
export function b64urlEncode(u8) {
  return b64encode(u8).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * URL-safe base64, padded or not.
 * @param {string} str
 * @returns {Uint8Array}
 * @throws {TypeError} when it is not URL-safe base64
 */
export function b64urlDecode(str) {
  if (typeof str !== "string" || !B64URL_RE.test(str)) throw new TypeError("bad base64");
  const body = str.replace(/=+$/, "");
  // One char over a multiple of 4 carries 6 bits: no byte; Python refuses it too.
  if (body.length % 4 === 1) throw new TypeError("bad base64");
  const std = body.replace(/-/g, "+").replace(/_/g, "/");
  return fromBinary(atob(std + "=".repeat((4 - (std.length % 4)) % 4)));
}

/**
 * The bytes of `parts`, one after the other.
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * UTF-8 bytes of a string (a lone surrogate becomes U+FFFD: check texts first).
 * @param {string} str
 * @returns {Uint8Array}
 */
export function utf8(str) {
  return encoder.encode(str);
}

/**
 * Strict UTF-8 decoding.
 * @param {Uint8Array} u8
 * @returns {string}
 * @throws {TypeError} when the bytes are not UTF-8
 */
export function utf8Decode(u8) {
  return decoder.decode(u8);
}

/**
 * Whether a string has no lone surrogate (so it can be UTF-8 encoded, as Python requires).
 * @param {string} str
 * @returns {boolean}
 */
export function isWellFormed(str) {
  if (typeof str.isWellFormed === "function") return str.isWellFormed();
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(str);
}

/**
 * Length in code points, as Python's len(str) counts (JS .length counts UTF-16 units).
 * @param {string} str
 * @returns {number}
 */
export function cpLength(str) {
  let n = 0;
  for (let i = 0; i < str.length; i++) {
    const c = str.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
      const d = str.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/**
 * Compare strings by code point, as Python orders str (JS `<` orders UTF-16 units).
 * @param {string} a
 * @param {string} b
 * @returns {number} negative, 0 or positive
 */
export function cmpCodePoints(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      // Only a surrogate against a char from U+E000 up orders differently.
      const xs = x >= 0xd800 && x <= 0xdfff;
      const ys = y >= 0xd800 && y <= 0xdfff;
      if (xs !== ys) return xs ? 1 : -1;
      return x - y;
    }
  }
  return a.length - b.length;
}

/**
 * Cryptographically random bytes.
 * @param {number} n
 * @returns {Uint8Array}
 */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

/**
 * n random bytes as 2n lowercase hex chars.
 * @param {number} n
 * @returns {string}
 */
export function randomHex(n) {
  return bytesToHex(randomBytes(n));
}

// JSON as Python's json module reads and writes it, for the felund formats.
//
// Why not JSON.parse: felund's Python nodes tell ints from floats (a
// created_ts of 1764000000.0 is refused), accept NaN and Infinity, and refuse
// nesting deeper than their recursion limit; a browser peer must accept and
// refuse exactly the same messages and control events, or circles diverge.
// JSON.parse would turn 1.0 into 1 and accept any depth.

/** A JSON number written with a fraction or exponent (Python float), or NaN/Infinity. */
export class PyFloat {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }
}

/** Input that Python's json.loads would refuse. */
export class JsonError extends Error {}

/**
 * How deep arrays and objects may nest. Python's limit is its recursion limit
 * (1000) minus the caller's stack depth, about 900 to 995 in practice; beyond
 * this value the two implementations may disagree, and below it they never do.
 */
export const MAX_DEPTH = 900;

const WS = new Set([" ", "\t", "\n", "\r"]);
const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

/**
 * Parse JSON text as Python's json.loads does. Integers become numbers (BigInt
 * beyond 2^53), other numbers PyFloat; objects are plain objects.
 * @param {string} text
 * @returns {any}
 * @throws {JsonError}
 */
export function loads(text) {
  if (typeof text !== "string") throw new JsonError("not text");
  let i = 0;
  const fail = (what) => {
    throw new JsonError(`${what} at ${i}`);
  };
  const skip = () => {
    while (i < text.length && WS.has(text[i])) i++;
  };
  const parseString = () => {
    i++; // the opening quote
    let out = "";
    let start = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail("control character in string");
      if (c === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        if (e === "u") {
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
        } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
          out += ESCAPES[e];
          i += 2;
        } else {
          fail("bad escape");
        }
        start = i;
        continue;
      }
      i++;
    }
  };
  const parseValue = (depth) => {
    skip();
    const c = text[i];
    if (c === "{") {
      if (depth >= MAX_DEPTH) fail("nested too deeply");
      i++;
      const obj = {};
      skip();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        skip();
        if (text[i] !== '"') fail("expected a key");
        const key = parseString();
        skip();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        const value = parseValue(depth + 1);
        // defineProperty: a "__proto__" key must be data, never the prototype.
        Object.defineProperty(obj, key, {
          value,
          writable: true,
          enumerable: true,
          configurable: true,
        });
        skip();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      if (depth >= MAX_DEPTH) fail("nested too deeply");
      i++;
      const arr = [];
      skip();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(parseValue(depth + 1));
        skip();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return parseString();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    if (text.startsWith("NaN", i)) {
      i += 3;
      return new PyFloat(NaN);
    }
    if (text.startsWith("Infinity", i)) {
      i += 8;
      return new PyFloat(Infinity);
    }
    if (text.startsWith("-Infinity", i)) {
      i += 9;
      return new PyFloat(-Infinity);
    }
    NUMBER_RE.lastIndex = i;
    const m = NUMBER_RE.exec(text);
    if (m === null) fail("expected a value");
    i += m[0].length;
    if (m[1] === undefined && m[2] === undefined) {
      const n = Number(m[0]);
      return Number.isSafeInteger(n) ? (Object.is(n, -0) ? 0 : n) : BigInt(m[0]);
    }
    return new PyFloat(Number(m[0]));
  };
  const value = parseValue(0);
  skip();
  if (i !== text.length) fail("extra data");
  return value;
}

/**
 * Whether a decoded value is a Python int (bool excluded, as felund's checks do).
 * @param {any} v
 * @returns {boolean}
 */
export function isInt(v) {
  return (typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint";
}

/**
 * Whether a decoded value is a JSON object (Python dict).
 * @param {any} v
 * @returns {boolean}
 */
export function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof PyFloat);
}

function cmpKeys(a, b) {
  // Python sorts keys by code point; JS sort() by UTF-16 unit.
  if (a === b) return 0;
  const x = Array.from(a, (ch) => ch.codePointAt(0));
  const y = Array.from(b, (ch) => ch.codePointAt(0));
  for (let k = 0; k < Math.min(x.length, y.length); k++) {
    if (x[k] !== y[k]) return x[k] - y[k];
  }
  return x.length - y.length;
}

function dumpString(s, ensureAscii) {
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    const ch = s[k];
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || (ensureAscii && c > 0x7e)) {
      // Python escapes every non-ASCII UTF-16 unit (DEL too) when ensure_ascii.
      out += "\\u" + c.toString(16).padStart(4, "0");
    } else out += ch;
  }
  return out + '"';
}

/**
 * Compact JSON text as Python's json.dumps(obj, separators=(",", ":"), ...) writes it.
 * @param {any} value
 * @param {{sortKeys?: boolean, ensureAscii?: boolean}} [options]
 * @returns {string}
 */
export function dumps(value, { sortKeys = false, ensureAscii = true } = {}) {
  const walk = (v) => {
    if (v === null || v === undefined) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (typeof v === "string") return dumpString(v, ensureAscii);
    if (typeof v === "bigint") return v.toString();
    if (typeof v === "number") {
      if (!Number.isInteger(v)) throw new TypeError("only integers are written (no floats)");
      return String(v);
    }
    if (v instanceof PyFloat) throw new TypeError("floats are not written");
    if (Array.isArray(v)) return "[" + v.map(walk).join(",") + "]";
    if (typeof v === "object") {
      const keys = Object.keys(v);
      if (sortKeys) keys.sort(cmpKeys);
      return "{" + keys.map((k) => dumpString(k, ensureAscii) + ":" + walk(v[k])).join(",") + "}";
    }
    throw new TypeError(`cannot write ${typeof v} as JSON`);
  };
  return walk(value);
}

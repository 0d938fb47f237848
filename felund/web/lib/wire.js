// The felund v1 chat message: strict checks, composing and opening (felund/wire.py).
//
// A member holds the circle secret, so a valid MAC proves nothing about the
// shape of a message: every field is checked for type, size and form before a
// message is accepted, with the same rules and in the same order as the
// Python node, so that both accept and refuse exactly the same messages.

import { b64decode, b64encode, cpLength, isWellFormed, randomBytes, utf8, utf8Decode } from "./bytes.js";
import { DecryptError, aesGcmDecrypt, aesGcmEncrypt, hmacHex, messageKey, secretBytes } from "./crypto.js";
import { CIRCLE_ID_LEN, isHex, newMsgId } from "./ids.js";
import { isPrintable } from "./invite.js";
import { InvalidMessage } from "./errors.js";
import { JsonError, dumps, isInt, isObject, loads } from "./pyjson.js";
import { signFields, signatureOf } from "./trust.js";
import { MAX_KEY_ID_LEN, ROOT_KEY_ID } from "./wrap.js";

export const DEFAULT_CHANNEL = "general";
export const CONTROL_CHANNEL = "__control";
export const MAX_DISPLAY_NAME = 64; // code points
export const MAX_TEXT = 8000; // code points
export const MAX_TEXT_BYTES = 16000; // UTF-8 bytes
export const MAX_CREATED_TS = 2 ** 41; // exclusive
// "<epoch key id>/i<m>.<id>" of the largest private channel epoch (felund/trust/channels.py).
export const MAX_KEY_ID_CHARS = MAX_KEY_ID_LEN + 2 + String(2 ** 31).length + 1 + 32; // 89
export const ENC_ALG = "AES-256-GCM";
export const ENC_KEY_ID = ROOT_KEY_ID;
const NONCE_LEN = 12;
const TAG_LEN = 16;
// As felund/wire.py: the largest plaintext a valid text and name can make, \u-escaped,
// and the author's key and signature a node of ours adds (felund.trust.signing).
const MAX_PLAINTEXT =
  '{"display_name":"","text":""}'.length + 12 * 64 + 4 * 8000 + 2 * 16000 +
  ',"pk":"","sig":""'.length + 44 + 88 +
  // and a batch's leaf index and longest path (felund.trust.batch: 63, six hashes).
  ',"leaf":,"path":""'.length + 2 + 256;
const MAX_CIPHERTEXT_CHARS = 4 * Math.ceil((MAX_PLAINTEXT + TAG_LEN) / 3);
const NONCE_B64_CHARS = 4 * Math.ceil(NONCE_LEN / 3);

/** The v1 keys, in the spec's order: exactly these travel. */
export const WIRE_KEYS = Object.freeze([
  "msg_id",
  "circle_id",
  "channel_id",
  "author_node_id",
  "display_name",
  "created_ts",
  "text",
  "mac",
  "schema_version",
  "enc",
]);
const ENC_KEYS = ["alg", "key_id", "nonce", "ciphertext"];
const REQUIRED = ["msg_id", "circle_id", "author_node_id", "created_ts"];

const MSG_ID_RE = /^[A-Za-z0-9_-]{8,64}$/;
const CHANNEL_RE = /^[a-z0-9_-]{1,32}$/;
const NODE_ID_RE = /^[A-Za-z0-9_.-]{1,128}$/;
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const SAFE_KEY_RE = /^[A-Za-z0-9_]{1,32}$/;
const BAD_NAME_CHAR_RE = /[\p{Cc}\p{Cs}]/u;

export { InvalidMessage };

/**
 * The key id a parsed message is sealed under (a MAC message: the root's).
 * @param {WireMessage} msg
 * @returns {string}
 */
export function keyIdOf(msg) {
  return msg.enc === null ? ENC_KEY_ID : msg.enc.key_id;
}

const has = (obj, key) => Object.hasOwn(obj, key);
const get = (obj, key, dflt) => (has(obj, key) ? obj[key] : dflt);

function str(value, field, maxLen) {
  if (typeof value !== "string") throw new InvalidMessage("type", field);
  if (cpLength(value) > maxLen) throw new InvalidMessage("size", field);
  return value;
}

function matching(value, field, re, maxLen) {
  const s = str(value, field, maxLen);
  if (!re.test(s)) throw new InvalidMessage("format", field);
  return s;
}

/**
 * The channel id if valid (1-32 of a-z 0-9 _ -, not starting "__" but "__control").
 * @param {any} value
 * @returns {string}
 * @throws {InvalidMessage}
 */
export function checkChannelId(value) {
  const channel = matching(value, "channel_id", CHANNEL_RE, 32);
  if (channel.startsWith("__") && channel !== CONTROL_CHANNEL) {
    throw new InvalidMessage("format", "channel_id");
  }
  return channel;
}

/**
 * The display name if valid (at most 64 chars, no control chars).
 * @param {any} value
 * @returns {string}
 * @throws {InvalidMessage}
 */
export function checkDisplayName(value) {
  const name = str(value, "display_name", MAX_DISPLAY_NAME);
  // Lone surrogates too: they cannot be UTF-8 encoded, so no MAC could cover them.
  if (BAD_NAME_CHAR_RE.test(name)) throw new InvalidMessage("format", "display_name");
  return name;
}

/**
 * The text if valid (at most 8000 chars and 16000 UTF-8 bytes, well-formed).
 * @param {any} value
 * @returns {string}
 * @throws {InvalidMessage}
 */
export function checkText(value) {
  const text = str(value, "text", MAX_TEXT);
  if (!isWellFormed(text)) throw new InvalidMessage("format", "text");
  if (utf8(text).length > MAX_TEXT_BYTES) throw new InvalidMessage("size", "text");
  return text;
}

function checkCreatedTs(value) {
  // Python ints only: a float (1.0), a bool or a string is a type error.
  if (!isInt(value)) throw new InvalidMessage("type", "created_ts");
  const big = BigInt(value);
  if (big < 0n || big >= BigInt(MAX_CREATED_TS)) throw new InvalidMessage("size", "created_ts");
  return Number(value);
}

function checkHeader(msgId, circleId, channelId, author, createdTs) {
  const mid = matching(msgId, "msg_id", MSG_ID_RE, 64);
  const cid = str(circleId, "circle_id", CIRCLE_ID_LEN);
  if (!isHex(cid, CIRCLE_ID_LEN)) throw new InvalidMessage("format", "circle_id");
  return {
    msg_id: mid,
    circle_id: cid,
    channel_id: checkChannelId(channelId),
    author_node_id: matching(author, "author_node_id", NODE_ID_RE, 128),
    created_ts: checkCreatedTs(createdTs),
  };
}

function b64Len(value, field, maxLen) {
  if (typeof value !== "string" || value.length > maxLen || !B64_RE.test(value)) {
    throw new InvalidMessage("enc", field);
  }
  if (value.length % 4) throw new InvalidMessage("enc", field);
  return (value.length / 4) * 3 - (value.endsWith("==") ? 2 : value.endsWith("=") ? 1 : 0);
}

function checkEnc(value) {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) throw new InvalidMessage("type", "enc");
  const keys = Object.keys(value);
  if (keys.length !== ENC_KEYS.length || ENC_KEYS.some((k) => !has(value, k))) {
    throw new InvalidMessage("enc", "enc keys");
  }
  if (value.alg !== ENC_ALG) throw new InvalidMessage("enc", "enc.alg");
  const keyId = value.key_id;
  if (typeof keyId !== "string") throw new InvalidMessage("enc", "enc.key_id");
  const keyIdLen = cpLength(keyId);
  if (keyIdLen < 1 || keyIdLen > MAX_KEY_ID_CHARS || !isPrintable(keyId)) {
    throw new InvalidMessage("enc", "enc.key_id");
  }
  if (b64Len(value.nonce, "enc.nonce", NONCE_B64_CHARS) !== NONCE_LEN) {
    throw new InvalidMessage("enc", "enc.nonce");
  }
  if (b64Len(value.ciphertext, "enc.ciphertext", MAX_CIPHERTEXT_CHARS) < TAG_LEN) {
    throw new InvalidMessage("enc", "enc.ciphertext");
  }
  return { alg: value.alg, key_id: keyId, nonce: value.nonce, ciphertext: value.ciphertext };
}

/**
 * Validate a decoded JSON message (felund.wire.parse_message) and return it with
 * exactly the v1 keys, in spec order, defaults filled in. Does not authenticate.
 * @param {any} obj
 * @returns {WireMessage}
 * @throws {InvalidMessage}
 */
export function parseMessage(obj) {
  if (!isObject(obj)) throw new InvalidMessage("not_object", "message");
  for (const key of Object.keys(obj)) {
    if (!WIRE_KEYS.includes(key)) {
      // The key is sender-chosen: name it only when it is short and plain.
      throw new InvalidMessage("unknown_key", SAFE_KEY_RE.test(key) ? key : "?");
    }
  }
  for (const field of REQUIRED) {
    if (!has(obj, field)) throw new InvalidMessage("missing_field", field);
  }
  const ids = checkHeader(
    obj.msg_id,
    obj.circle_id,
    get(obj, "channel_id", DEFAULT_CHANNEL),
    obj.author_node_id,
    obj.created_ts,
  );
  const enc = checkEnc(get(obj, "enc", null));
  if (enc === null && !has(obj, "text")) throw new InvalidMessage("missing_field", "text");
  const displayName = checkDisplayName(get(obj, "display_name", ""));
  const text = checkText(get(obj, "text", ""));
  const mac = str(get(obj, "mac", ""), "mac", 64);
  if (mac && !isHex(mac, 64)) throw new InvalidMessage("format", "mac");
  if (enc === null && !mac) throw new InvalidMessage("missing_field", "mac");
  const schemaVersion = get(obj, "schema_version", 1);
  if (!isInt(schemaVersion)) throw new InvalidMessage("type", "schema_version");
  if (schemaVersion !== 1 && schemaVersion !== 2) {
    throw new InvalidMessage("format", "schema_version");
  }
  return wireObject(ids, displayName, text, mac, schemaVersion, enc);
}

/**
 * @typedef {object} WireMessage a v1 message as it travels (snake_case keys)
 * @property {string} msg_id
 * @property {string} circle_id
 * @property {string} channel_id
 * @property {string} author_node_id
 * @property {string} display_name "" when enc is set
 * @property {number} created_ts
 * @property {string} text "" when enc is set
 * @property {string} mac "" when enc is set
 * @property {number} schema_version 1 (MAC) or 2 (enc)
 * @property {{alg: string, key_id: string, nonce: string, ciphertext: string}|null} enc
 */

/**
 * @typedef {object} OpenedMessage an authenticated message
 * @property {string} msgId
 * @property {string} circleId
 * @property {string} channelId
 * @property {string} authorNodeId
 * @property {string} displayName
 * @property {number} createdTs
 * @property {string} text
 * @property {{pk: Uint8Array, sig: Uint8Array, leaf: number|null, path: Uint8Array|null}|null}
 *   signed the author's signature from the enc plaintext (null: unsigned; leaf and path
 *   in the batch form), not yet checked: trust.check decides on it
 * @property {WireMessage} wire the message as it travels (keeps its mac or enc)
 */

function macInput(ids, displayName, text) {
  return [
    ids.msg_id,
    ids.circle_id,
    ids.channel_id,
    ids.author_node_id,
    displayName,
    String(ids.created_ts),
    text,
  ].join("|");
}

function adText(ids) {
  return `${ids.msg_id}|${ids.circle_id}|${ids.channel_id}|${ids.author_node_id}|${ids.created_ts}`;
}

/**
 * The hex MAC of a plain (schema 1) message.
 * @param {string} secretHex
 * @param {{msg_id: string, circle_id: string, channel_id: string, author_node_id: string,
 *   display_name: string, created_ts: number, text: string}} fields
 * @returns {Promise<string>}
 */
export function messageMac(secretHex, fields) {
  return hmacHex(secretBytes(secretHex), macInput(fields, fields.display_name, fields.text));
}

/**
 * The `enc` object of a schema 2 message.
 * @param {string} secretHex
 * @param {{msg_id: string, circle_id: string, channel_id: string, author_node_id: string,
 *   created_ts: number}} ids
 * @param {string} displayName
 * @param {string} text
 * @param {Uint8Array} [nonce] 12 bytes; random when absent (tests pass the vectors')
 * @param {{pk: string, sig: string}|null} [signed] the author's signature (trust.signFields)
 * @param {string} [keyId] the key id of the epoch whose secret secretHex is (wrap.js epochKeyId)
 * @returns {Promise<{alg: string, key_id: string, nonce: string, ciphertext: string}>}
 */
export async function encryptFields(secretHex, ids, displayName, text, nonce, signed = null, keyId = ENC_KEY_ID) {
  const iv = nonce ?? randomBytes(NONCE_LEN);
  // ensure_ascii JSON, as the reference writes the plaintext; v1 readers take only the first two keys.
  const plain = { display_name: displayName, text };
  if (signed) Object.assign(plain, { pk: signed.pk, sig: signed.sig });
  const plaintext = utf8(dumps(plain, { ensureAscii: true }));
  const key = await messageKey(secretHex);
  const sealed = await aesGcmEncrypt(key, iv, plaintext, utf8(adText(ids)));
  return { alg: ENC_ALG, key_id: keyId, nonce: b64encode(iv), ciphertext: b64encode(sealed) };
}

/**
 * Compose and authenticate a message of this node (felund.wire.compose_message).
 * createdTs defaults to now and msgId to a fresh id. With `key`, an encrypted
 * message is signed by it (a plain one cannot carry a signature). keyId names the
 * epoch secretHex belongs to (default: the root's "epoch-0").
 * @param {string} secretHex
 * @param {{circleId: string, channelId?: string, authorNodeId: string, displayName?: string,
 *   text: string, createdTs?: number, msgId?: string, encrypt?: boolean,
 *   key?: import("./trust.js").IdentityKey|null, keyId?: string}} fields
 * @returns {Promise<WireMessage>} exactly the v1 keys; encrypt (default) gives schema 2
 * @throws {InvalidMessage} if a peer would refuse it
 */
export async function composeMessage(secretHex, fields) {
  const {
    circleId,
    channelId = DEFAULT_CHANNEL,
    authorNodeId,
    displayName = "",
    text,
    encrypt = true,
    key = null,
    keyId = ENC_KEY_ID,
  } = fields;
  const createdTs = fields.createdTs ?? Math.floor(Date.now() / 1000);
  const msgId = fields.msgId ?? (await newMsgId(authorNodeId, createdTs));
  const ids = checkHeader(msgId, circleId, channelId, authorNodeId, createdTs);
  checkDisplayName(displayName);
  checkText(text);
  if (encrypt) {
    const signed = key
      ? await signFields(key, {
          msgId: ids.msg_id,
          circleId: ids.circle_id,
          channelId: ids.channel_id,
          authorNodeId: ids.author_node_id,
          createdTs: ids.created_ts,
          displayName,
          text,
        })
      : null;
    const enc = await encryptFields(secretHex, ids, displayName, text, undefined, signed, keyId);
    // The plaintext lives only in enc; a v1 peer reads it from there.
    return wireObject(ids, "", "", "", 2, enc);
  }
  const mac = await hmacHex(secretBytes(secretHex), macInput(ids, displayName, text));
  return wireObject(ids, displayName, text, mac, 1, null);
}

function wireObject(ids, displayName, text, mac, schemaVersion, enc) {
  // The spec's key order (display_name sits between author_node_id and created_ts).
  return {
    msg_id: ids.msg_id,
    circle_id: ids.circle_id,
    channel_id: ids.channel_id,
    author_node_id: ids.author_node_id,
    display_name: displayName,
    created_ts: ids.created_ts,
    text,
    mac,
    schema_version: schemaVersion,
    enc,
  };
}

/**
 * Authenticate a message of circleId and return its content (felund.wire
 * parse_message then open_message): accepted if it carries enc and it
 * decrypts, or, without enc, if its MAC verifies.
 * @param {string} secretHex
 * @param {string} circleId
 * @param {any} wire a decoded JSON message (from pyjson.loads keeps int/float apart)
 * @returns {Promise<OpenedMessage>}
 * @throws {InvalidMessage} for any bad field, another circle, a bad MAC or a failed decryption
 */
export async function openMessage(secretHex, circleId, wire) {
  const msg = parseMessage(wire);
  if (msg.circle_id !== circleId) throw new InvalidMessage("other_circle", "circle_id");
  let displayName = msg.display_name;
  let text = msg.text;
  let signed = null;
  if (msg.enc !== null) {
    [displayName, text, signed] = await decryptFields(secretHex, msg);
    checkDisplayName(displayName);
    checkText(text);
  } else {
    const expected = await hmacHex(secretBytes(secretHex), macInput(msg, displayName, text));
    if (!constantTimeEqual(expected, msg.mac)) throw new InvalidMessage("auth", "mac");
  }
  return {
    msgId: msg.msg_id,
    circleId: msg.circle_id,
    channelId: msg.channel_id,
    authorNodeId: msg.author_node_id,
    displayName,
    createdTs: msg.created_ts,
    text,
    signed,
    wire: msg,
  };
}

async function decryptFields(secretHex, msg) {
  let plaintext;
  try {
    const key = await messageKey(secretHex);
    plaintext = await aesGcmDecrypt(
      key,
      b64decode(msg.enc.nonce),
      b64decode(msg.enc.ciphertext),
      utf8(adText(msg)),
    );
  } catch (e) {
    if (e instanceof DecryptError || e instanceof TypeError) throw new InvalidMessage("auth", "enc");
    throw e;
  }
  let obj;
  try {
    obj = loads(utf8Decode(plaintext));
  } catch (e) {
    if (e instanceof JsonError || e instanceof TypeError) throw new InvalidMessage("auth", "enc");
    throw e;
  }
  // v1's two keys, or those and the author's pk and sig, alone or with a batch's leaf and
  // path (read, not yet checked, here).
  const keys = isObject(obj) ? Object.keys(obj) : [];
  const withSig = has(obj, "pk") && has(obj, "sig");
  const batched = keys.length === 6 && withSig && has(obj, "leaf") && has(obj, "path");
  const signed = (keys.length === 4 && withSig) || batched;
  if ((keys.length !== 2 && !signed) || !has(obj, "display_name") || !has(obj, "text")) {
    throw new InvalidMessage("auth", "enc");
  }
  if (typeof obj.display_name !== "string" || typeof obj.text !== "string") {
    throw new InvalidMessage("auth", "enc");
  }
  if (!signed) return [obj.display_name, obj.text, null];
  const pair = signatureOf(obj); // trust.check decides on it
  // All null: a signature claimed and not given (felund/v1/crypto.py decrypt_message).
  if (pair === null) {
    throw new InvalidMessage("signature", "pk and sig must be a 32- and a 64-byte base64 pair");
  }
  return [obj.display_name, obj.text, pair];
}

function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

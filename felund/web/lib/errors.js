// The library's refusal of a message, shared by wire.js and trust.js (as felund/errors.py is).

/**
 * A message a peer would refuse. `kind` is felund/wire.py's (type, size, format,
 * not_object, unknown_key, missing_field, enc) or, when opening: `other_circle`
 * (another circle's message), `auth` (bad MAC, or it does not decrypt),
 * `signature` (a malformed or failing signature), `key_mismatch` (signed by
 * another key than its author's).
 */
export class InvalidMessage extends Error {
  /**
   * @param {string} kind
   * @param {string} detail the field concerned
   */
  constructor(kind, detail) {
    super(`${kind}: ${detail}`);
    this.name = "InvalidMessage";
    this.kind = kind;
    this.detail = detail;
  }
}

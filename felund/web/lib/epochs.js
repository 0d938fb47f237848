// The epoch secrets a browser holds for one circle, and what they decide
// (SPEC-16 §3), sans IO: CircleSync keeps them in the store and feeds this.
//
// - The root secret (epoch 0, "epoch-0", circles.secret) and each later epoch's,
//   by epoch id; all are kept, to read what was written under them.
// - The newest: the newest epoch of the fold's winning chain held here (before
//   a fold has been seen: the highest n held). Everything is written under it
//   and the relay is signed with its api key.
// - A key id names a held secret (open it), a plausible epoch not held yet
//   (`e<n>.<32 hex>`, n at most newest + 16: keep it sealed until the secret
//   comes), or neither (refused "unknown_key").
// - Once opened: an author the newest epoch removed is refused ("removed"); an
//   unsigned message under another epoch than the newest winner is refused
//   ("stale_epoch": v1 peers cannot follow, and a removed member cannot forge
//   an unsigned old-epoch message).
// - A private channel's messages (lib/channels.js) are sealed under a message
//   secret derived from a channel part held here (a key channel's typed key, an
//   invite channel's epoch secret) and a circle epoch: "<epoch key id>/<part>",
//   plausible as the epoch it is under is.

import * as chan from "./channels.js";
import { ROOT_KEY_ID, epochKeyId, parseKeyId } from "./wrap.js";

/** How far beyond the newest held epoch a key id may name one and still be kept sealed. */
export const PLAUSIBLE_AHEAD = 16;

/**
 * @typedef {object} HeldEpoch
 * @property {number} n
 * @property {string} epochId "" for the root
 * @property {string} secret 64 hex
 */

/** One circle's epoch secrets and the fold's verdict on removals. */
export class EpochKeys {
  /**
   * @param {string} rootSecret "" when unknown (joined by an epoch invite code, until the links reach it)
   * @param {Array<HeldEpoch>} [epochs] the later epochs held
   * @param {string} [circleId] what private channels' secrets are bound to
   */
  constructor(rootSecret, epochs = [], circleId = "") {
    this.circleId = circleId;
    /** @type {Map<string, HeldEpoch>} epoch id -> held epoch ("" = the root) */
    this.held = new Map();
    if (rootSecret) this.held.set("", { n: 0, epochId: "", secret: rootSecret });
    for (const e of epochs) this.held.set(e.epochId, { n: e.n, epochId: e.epochId, secret: e.secret });
    /** @type {string[]|null} the fold's winning chain (epoch ids of 1..n), null before a fold */
    this.chain = null;
    /** @type {Set<string>} node ids the newest winner removed */
    this.removed = new Set();
    /** @type {Map<string, string>} "<channel id> <part>" -> a typed key ("k") or a secret hex */
    this.parts = new Map();
  }

  /** Hold a private channel's part; whether it is new here. */
  addPart(channelId, part, secret) {
    const at = `${channelId} ${part}`;
    if (this.parts.has(at)) return false;
    this.parts.set(at, secret);
    return true;
  }

  /** Whether a private channel's part is held. */
  hasPart(channelId, part) {
    return this.parts.has(`${channelId} ${part}`);
  }

  /**
   * The message secret a key id names for a message in channelId (a circle epoch's,
   * or a private channel's under one), or null when it is not held.
   * @param {string} keyId
   * @param {string} channelId
   * @returns {Promise<string|null>}
   */
  async secretOf(keyId, channelId) {
    if (!keyId.includes("/")) return this.secretFor(keyId);
    const parsed = chan.parseChannelKeyId(keyId);
    const epoch = parsed ? this.secretFor(parsed[0]) : null;
    const kept = parsed ? this.parts.get(`${channelId} ${parsed[1]}`) : undefined;
    if (epoch === null || kept === undefined) return null;
    if (parsed[1] === chan.KEY_PART) return chan.keyChannelSecret(kept, epoch, this.circleId, channelId);
    return chan.inviteChannelSecret(kept, epoch, this.circleId, channelId);
  }

  /**
   * {keyId, secret} a private channel's messages are written under now: its key (key
   * channel) or its newest channel epoch (invite) under the newest circle epoch; null
   * when not held.
   * @param {object} channel the fold's
   * @returns {Promise<{keyId: string, secret: string}|null>}
   */
  async channelSeal(channel) {
    let part;
    if (channel.accessMode === "key") part = chan.KEY_PART;
    else if (channel.keys.length) {
      const tip = channel.keys[channel.keys.length - 1];
      part = chan.invitePart(tip.n, tip.epochId);
    } else return null;
    const keyId = chan.channelKeyId(this.newestKeyId(), part);
    const secret = await this.secretOf(keyId, channel.channelId);
    return secret === null ? null : { keyId, secret };
  }

  /**
   * [key id, channel id or null: any] of the sealed rows that epochs and channel parts
   * just gained may open: each epoch's own and its channels', each part under every epoch.
   * @param {Array<HeldEpoch>} epochs
   * @param {Array<[string, string]>} parts [channel id, part]
   * @returns {Array<[string, string|null]>}
   */
  openedBy(epochs, parts) {
    const found = new Map();
    const add = (keyId, channelId) => found.set(`${keyId} ${channelId ?? ""}`, [keyId, channelId]);
    const allParts = [...this.parts.keys()].map((k) => k.split(" "));
    for (const e of epochs) {
      const keyId = epochKeyId(e.n, e.epochId);
      add(keyId, null);
      for (const [channelId, part] of allParts) add(chan.channelKeyId(keyId, part), channelId);
    }
    for (const [channelId, part] of parts) {
      for (const e of this.held.values()) add(chan.channelKeyId(epochKeyId(e.n, e.epochId), part), channelId);
    }
    return [...found.values()];
  }

  /** Hold one more epoch; whether it is new here. @param {HeldEpoch} epoch */
  add({ n, epochId, secret }) {
    if (this.held.has(epochId)) return false;
    this.held.set(epochId, { n, epochId, secret });
    return true;
  }

  /**
   * The newest winner held (null: none at all, which a circle never is for long).
   * @returns {HeldEpoch|null}
   */
  newest() {
    if (this.chain !== null) {
      for (let i = this.chain.length - 1; i >= 0; i--) {
        const e = this.held.get(this.chain[i]);
        if (e) return e;
      }
      if (this.held.has("")) return this.held.get("");
    }
    let best = null;
    for (const e of this.held.values()) {
      if (!best || e.n > best.n || (e.n === best.n && e.epochId < best.epochId)) best = e;
    }
    return best;
  }

  /** @returns {string} the key id everything is written under now */
  newestKeyId() {
    const e = this.newest();
    return e ? epochKeyId(e.n, e.epochId) : ROOT_KEY_ID;
  }

  /**
   * The secret a key id names, or null when it is not held.
   * @param {string} keyId
   * @returns {string|null}
   */
  secretFor(keyId) {
    const at = parseKeyId(keyId);
    const e = at ? this.held.get(at.epochId) : undefined;
    return e && e.n === at.n ? e.secret : null;
  }

  /**
   * Whether a key id not held names an epoch that may yet come (kept sealed till then).
   * @param {string} keyId
   */
  plausible(keyId) {
    // The root too: a member who joined by a later epoch's code learns it last (EPOCH_LINK).
    if (keyId.includes("/") && chan.parseChannelKeyId(keyId) === null) return false;
    const at = parseKeyId(chan.epochOfKeyId(keyId));
    return at !== null && at.n <= (this.newest()?.n ?? 0) + PLAUSIBLE_AHEAD;
  }

  /**
   * Take what a fold says: the winning chain and whom its newest removed.
   * @param {{chain: string[], removed: Iterable<string>}} fold
   */
  follow({ chain, removed }) {
    this.chain = [...chain];
    this.removed = new Set(removed);
  }

  /**
   * Why an opened message is refused, or null (SPEC-16 §3 "Refusals").
   * @param {string} author
   * @param {string} keyId what it was sealed under
   * @param {boolean} signed whether its author's signature verified
   * @returns {"removed"|"stale_epoch"|null}
   */
  refusal(author, keyId, signed) {
    if (this.removed.has(author)) return "removed";
    if (!signed && keyId !== this.winnerKeyId()) return "stale_epoch";
    return null;
  }

  /**
   * The held epoch before a held one (its parent in the fold's chain), or null.
   * @param {HeldEpoch} epoch
   * @returns {HeldEpoch|null}
   */
  parentOf(epoch) {
    if (epoch.n === 0) return null;
    const at = this.chain?.indexOf(epoch.epochId) ?? -1;
    if (at < 0) return null;
    return this.held.get(at === 0 ? "" : this.chain[at - 1]) ?? null;
  }

  /** Whether the newest winner of the fold is held here (a new epoch can be written on it). */
  holdsWinner() {
    return this.newestKeyId() === this.winnerKeyId();
  }

  /** The newest winner's key id, as the fold says (what this node holds before any fold). */
  winnerKeyId() {
    if (this.chain === null) return this.newestKeyId();
    return epochKeyId(this.chain.length, this.chain[this.chain.length - 1] ?? "");
  }
}

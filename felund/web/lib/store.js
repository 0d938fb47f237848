// The browser peer's state in IndexedDB, so that a reload keeps everything:
// identity (with its non-extractable signing and X25519 keys), circles (with their
// secrets), messages (opened, with their wire form so they can be served on,
// and whether their author's signature verified), the keys pinned for older
// node ids, the outbox of sent-but-unacknowledged messages, relay cursors and
// settings, the epoch secrets held (issue 16: the root secret stays in
// circles; each later epoch's in epochs) and the messages sealed under an epoch
// not held yet (their wire form only: shown nowhere until the secret arrives),
// and what private channels' secrets derive from (a key channel's typed key, an
// invite channel's epoch secrets: never shown, never logged).
// One database per name (tests use their own names, or their own browser contexts).
//
// Each message stored gets the next arrival number (seq), like a node's
// store_seq, and messages read back in (createdTs, seq) order: the order of
// every felund screen (created_ts, then arrival, msg_id only breaking ties).

// 2: the pinned keys (messages stored by 1 read as unverified); 3: epochs, sealed; 4: channel keys
const VERSION = 5;
const KV = "kv"; // identity and settings
const CIRCLES = "circles"; // keyPath circleId
const MESSAGES = "messages"; // keyPath [circleId, msgId]; indexes byTime, byChannel
const OUTBOX = "outbox"; // keyPath msgId; index byCircle
const CURSORS = "cursors"; // keyPath circleId
const KEYS = "keys"; // keyPath [circleId, nodeId]: the key pinned for an older id, at first sight
const EPOCHS = "epochs"; // keyPath [circleId, epochId]: {n, secret} of an epoch > 0 held here
const SEALED = "sealed"; // keyPath [circleId, msgId]; index byKey [circleId, keyId]
const CHANNEL_KEYS = "channelKeys"; // keyPath [circleId, channelId, part]: {secret}
const SEQ = "seq"; // kv key: the last arrival number given
/** The sealed rows a circle keeps at most (SPEC-16 §3); beyond, rejected "sealed_full". */
export const MAX_SEALED = 50_000;

function req(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Every key [circleId, anything] of a store keyed by [circleId, id]. */
function ofCircle(circleId) {
  return IDBKeyRange.bound([circleId, ""], [circleId, "\uffff"]);
}

/** The key of the n-th newest entry of an index's range (n >= 1), or null when it has fewer. */
function nthNewestKey(index, range, n) {
  return new Promise((resolve, reject) => {
    const request = index.openKeyCursor(range, "prev");
    let stepped = n <= 1;
    request.onsuccess = () => {
      const cursor = request.result;
      if (!cursor || stepped) {
        resolve(cursor ? cursor.key : null);
        return;
      }
      stepped = true;
      cursor.advance(n - 1);
    };
    request.onerror = () => reject(request.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/**
 * @typedef {object} StoredMessage an opened message as stored (see wire.js OpenedMessage)
 * @property {string} circleId
 * @property {string} msgId
 * @property {string} channelId
 * @property {string} authorNodeId
 * @property {string} displayName
 * @property {number} createdTs
 * @property {string} text
 * @property {boolean} verified its author's signature verified (false: unsigned)
 * @property {string|null} signer the base64 public key that verified it
 * @property {object} wire
 */

function record(circleId, m, seq) {
  // Only the known fields: callers may hang UI state on the objects they pass.
  return {
    circleId,
    msgId: m.msgId,
    channelId: m.channelId,
    authorNodeId: m.authorNodeId,
    displayName: m.displayName,
    createdTs: m.createdTs,
    text: m.text,
    verified: Boolean(m.verified),
    signer: m.signer ?? null,
    wire: m.wire,
    seq,
  };
}

// The order of every felund screen: created_ts, then arrival (seq), msg_id only
// breaking ties (messages stored before seq existed have none).
function byTime(a, b) {
  return (
    a.createdTs - b.createdTs ||
    (a.seq ?? 0) - (b.seq ?? 0) ||
    (a.msgId < b.msgId ? -1 : a.msgId > b.msgId ? 1 : 0)
  );
}

/** The browser peer's IndexedDB database. */
export class Store {
  /** @param {IDBDatabase} db */
  constructor(db) {
    this.db = db;
  }

  _tx(stores, mode = "readonly") {
    return this.db.transaction(stores, mode);
  }

  async _get(storeName, key) {
    return req(this._tx([storeName]).objectStore(storeName).get(key));
  }

  async _put(storeName, value, key) {
    const tx = this._tx([storeName], "readwrite");
    tx.objectStore(storeName).put(value, key);
    return done(tx);
  }

  /**
   * @returns {Promise<{nodeId: string, displayName: string,
   *   key?: import("./trust.js").IdentityKey, xKey?: import("./wrap.js").XKey}|null>}
   *   key: absent in an identity made before keys; xKey: before epochs
   */
  async getIdentity() {
    return (await this._get(KV, "identity")) ?? null;
  }

  /**
   * The CryptoKeys are stored as they are: IndexedDB keeps a non-extractable key non-extractable.
   * @param {{nodeId: string, displayName: string, key?: import("./trust.js").IdentityKey,
   *   xKey?: import("./wrap.js").XKey}} identity
   */
  async putIdentity({ nodeId, displayName, key, xKey }) {
    const value = { nodeId, displayName };
    if (key) value.key = { privateKey: key.privateKey, publicKey: key.publicKey };
    if (xKey) value.xKey = { privateKey: xKey.privateKey, publicKey: xKey.publicKey };
    return this._put(KV, value, "identity");
  }

  /** @returns {Promise<Array<{circleId: string, secret: string, name: string, relayUrl: string, joinedTs: number}>>} */
  async circles() {
    const all = await req(this._tx([CIRCLES]).objectStore(CIRCLES).getAll());
    return all.sort((a, b) => a.joinedTs - b.joinedTs);
  }

  /**
   * @param {string} circleId
   * @returns {Promise<object|null>}
   */
  async getCircle(circleId) {
    return (await this._get(CIRCLES, circleId)) ?? null;
  }

  /** @param {{circleId: string, secret: string, name?: string, relayUrl?: string, joinedTs?: number}} circle */
  async putCircle(circle) {
    const value = {
      name: "",
      relayUrl: "",
      joinedTs: Math.floor(Date.now() / 1000),
      ...circle,
    };
    return this._put(CIRCLES, value);
  }

  /**
   * Forget a circle with its messages, outbox and cursor.
   * @param {string} circleId
   */
  async deleteCircle(circleId) {
    const perCircle = [KEYS, MESSAGES, EPOCHS, SEALED, CHANNEL_KEYS];
    const tx = this._tx([CIRCLES, OUTBOX, CURSORS, ...perCircle], "readwrite");
    tx.objectStore(CIRCLES).delete(circleId);
    tx.objectStore(CURSORS).delete(circleId);
    for (const name of perCircle) tx.objectStore(name).delete(ofCircle(circleId));
    const outbox = tx.objectStore(OUTBOX).index("byCircle");
    outbox.openKeyCursor(IDBKeyRange.only(circleId)).onsuccess = (e) => {
      const cursor = e.target.result;
      if (cursor) {
        tx.objectStore(OUTBOX).delete(cursor.primaryKey);
        cursor.continue();
      }
    };
    return done(tx);
  }

  /**
   * Store opened messages of a circle, each msgId once, and the keys they pinned, in one transaction.
   * @param {string} circleId
   * @param {Array<StoredMessage|import("./wire.js").OpenedMessage>} openedMsgs
   * @param {Array<{nodeId: string, pk: string, firstSeen: number}>} [pins] keys first seen for older ids
   * @returns {Promise<StoredMessage[]>} the ones not stored before, in the order given (arrival)
   */
  async putMessages(circleId, openedMsgs, pins = []) {
    return this._putNew(circleId, openedMsgs, null, pins);
  }

  /**
   * The keys pinned in a circle: Map nodeId -> base64 public key.
   * @param {string} circleId
   * @returns {Promise<Map<string, string>>}
   */
  async pins(circleId) {
    const rows = await req(this._tx([KEYS]).objectStore(KEYS).getAll(ofCircle(circleId)));
    return new Map(rows.map((r) => [r.nodeId, r.pk]));
  }

  /**
   * A message of this node: into messages and the outbox in one transaction, so
   * that it shows at once and is sent even after a reload.
   * @param {string} circleId
   * @param {import("./wire.js").OpenedMessage} opened
   * @returns {Promise<void>}
   */
  async addOutgoing(circleId, opened) {
    await this._putNew(circleId, [opened], opened.wire);
  }

  _putNew(circleId, openedMsgs, outboxWire, pins = []) {
    // Callbacks, not await, inside the transaction: it must not commit between get and put.
    // Requests of one transaction complete in the order made: the counter is read first.
    const stores = [KV, MESSAGES, ...(outboxWire ? [OUTBOX] : []), ...(pins.length ? [KEYS] : [])];
    const tx = this._tx(stores, "readwrite");
    for (const { nodeId, pk, firstSeen } of pins) {
      // add, not put: a pin is never replaced (the first key seen for an id stays).
      tx.objectStore(KEYS).add({ circleId, nodeId, pk, firstSeen }).onerror = (e) => {
        e.preventDefault();
        e.stopPropagation();
      };
    }
    const kv = tx.objectStore(KV);
    const messages = tx.objectStore(MESSAGES);
    const fresh = [];
    const seen = new Set();
    let seq = 0;
    kv.get(SEQ).onsuccess = (e) => {
      seq = e.target.result ?? 0;
    };
    for (const m of openedMsgs) {
      if (seen.has(m.msgId)) continue;
      seen.add(m.msgId);
      messages.getKey([circleId, m.msgId]).onsuccess = (e) => {
        if (e.target.result !== undefined) return;
        seq += 1;
        const rec = record(circleId, m, seq);
        messages.put(rec);
        kv.put(seq, SEQ);
        fresh.push(rec);
      };
    }
    if (outboxWire) {
      const out = { msgId: outboxWire.msg_id, circleId, wire: outboxWire };
      // After the message's own callback: it carries the message's arrival number.
      kv.get(SEQ).onsuccess = () => tx.objectStore(OUTBOX).put({ ...out, seq });
    }
    return done(tx).then(() => fresh);
  }

  /**
   * The msgIds of a circle's messages (keys only: no message is read).
   * @param {string} circleId
   * @returns {Promise<string[]>}
   */
  async messageIds(circleId) {
    const keys = await req(this._tx([MESSAGES]).objectStore(MESSAGES).getAllKeys(ofCircle(circleId)));
    return keys.map((key) => key[1]);
  }

  /**
   * A circle's messages in (createdTs, arrival) order.
   * @param {string} circleId
   * @param {{channelId?: string, limit?: number}} [options] limit: the newest this many
   * @returns {Promise<StoredMessage[]>}
   */
  async messages(circleId, { channelId, limit } = {}) {
    const [name, lo, hi] =
      channelId === undefined
        ? ["byTime", [circleId, -Infinity, ""], [circleId, Infinity, "\uffff"]]
        : ["byChannel", [circleId, channelId, -Infinity, ""], [circleId, channelId, Infinity, "\uffff"]];
    const index = () => this._tx([MESSAGES]).objectStore(MESSAGES).index(name);
    let from = lo;
    if (limit !== undefined) {
      // The newest `limit` only (the page's first render): keys alone step back to the
      // limit-th newest, and only from its second on are whole records read.
      const key = await nthNewestKey(index(), IDBKeyRange.bound(lo, hi), limit);
      if (key) from = [...key.slice(0, -1), ""];
    }
    const all = (await req(index().getAll(IDBKeyRange.bound(from, hi)))).sort(byTime);
    return limit !== undefined && all.length > limit ? all.slice(all.length - limit) : all;
  }


  /**
   * Wire messages of a circle not yet acknowledged by the relay, oldest first.
   * @param {string} circleId
   * @returns {Promise<object[]>}
   */
  async outbox(circleId) {
    const index = this._tx([OUTBOX]).objectStore(OUTBOX).index("byCircle");
    const rows = await req(index.getAll(IDBKeyRange.only(circleId)));
    // Posted in arrival order: the relay keeps it, and so do the nodes that pull from it.
    return rows
      .sort((a, b) => a.wire.created_ts - b.wire.created_ts || (a.seq ?? 0) - (b.seq ?? 0))
      .map((r) => r.wire);
  }

  /**
   * @param {string} circleId
   * @param {object} wire
   */
  async putOutbox(circleId, wire) {
    return this._put(OUTBOX, { msgId: wire.msg_id, circleId, wire });
  }

  /** @param {string} msgId */
  async deleteOutbox(msgId) {
    const tx = this._tx([OUTBOX], "readwrite");
    tx.objectStore(OUTBOX).delete(msgId);
    return done(tx);
  }

  /**
   * The epoch secrets held for a circle beyond its root (circles.secret), newest (highest n) first.
   * @param {string} circleId
   * @returns {Promise<Array<{circleId: string, epochId: string, n: number, secret: string}>>}
   */
  async epochs(circleId) {
    const rows = await req(this._tx([EPOCHS]).objectStore(EPOCHS).getAll(ofCircle(circleId)));
    return rows.sort((a, b) => b.n - a.n || (a.epochId < b.epochId ? -1 : 1));
  }

  /**
   * Keep an epoch's secret (kept forever: it reads what was written under it).
   * @param {string} circleId
   * @param {{epochId: string, n: number, secret: string}} epoch
   */
  async putEpoch(circleId, { epochId, n, secret }) {
    return this._put(EPOCHS, { circleId, epochId, n, secret });
  }

  /**
   * What a circle's private channels' secrets derive from, as kept here.
   * @param {string} circleId
   * @returns {Promise<Array<{circleId: string, channelId: string, part: string, secret: string}>>}
   */
  async channelKeys(circleId) {
    return req(this._tx([CHANNEL_KEYS]).objectStore(CHANNEL_KEYS).getAll(ofCircle(circleId)));
  }

  /**
   * Keep a private channel's part: a key channel's typed key ("k"), an invite channel
   * epoch's secret ("i<m>.<id>"); kept forever, to read what was written under it.
   */
  async putChannelKey(circleId, channelId, part, secret) {
    return this._put(CHANNEL_KEYS, { circleId, channelId, part, secret });
  }

  /**
   * Keep messages sealed under an epoch not held yet, as they travel, each msgId once,
   * at most MAX_SEALED per circle.
   * @param {string} circleId
   * @param {Array<{msgId: string, keyId: string, wire: object}>} rows
   * @returns {Promise<{stored: string[], full: string[]}>} msgIds kept, and refused for want of room
   */
  async putSealed(circleId, rows) {
    const tx = this._tx([SEALED], "readwrite");
    const sealed = tx.objectStore(SEALED);
    const stored = [];
    const full = [];
    sealed.count(ofCircle(circleId)).onsuccess = (e) => {
      let count = e.target.result;
      for (const { msgId, keyId, wire } of rows) {
        sealed.getKey([circleId, msgId]).onsuccess = (got) => {
          if (got.target.result !== undefined) return;
          if (count >= MAX_SEALED) {
            full.push(msgId);
            return;
          }
          count += 1;
          sealed.put({ circleId, msgId, keyId, wire });
          stored.push(msgId);
        };
      }
    };
    await done(tx);
    return { stored, full };
  }

  /**
   * The sealed rows of a circle (all, or those under one key id).
   * @param {string} circleId
   * @param {string} [keyId]
   * @returns {Promise<Array<{circleId: string, msgId: string, keyId: string, wire: object}>>}
   */
  async sealed(circleId, keyId) {
    const store = this._tx([SEALED]).objectStore(SEALED);
    if (keyId === undefined) return req(store.getAll(ofCircle(circleId)));
    return req(store.index("byKey").getAll([circleId, keyId]));
  }

  /**
   * One sealed row, or null.
   * @param {string} circleId
   * @param {string} msgId
   * @returns {Promise<{circleId: string, msgId: string, keyId: string, wire: object}|null>}
   */
  async sealedOne(circleId, msgId) {
    return (await this._get(SEALED, [circleId, msgId])) ?? null;
  }

  /**
   * Forget sealed rows (opened, or refused once opened).
   * @param {string} circleId
   * @param {string[]} msgIds
   */
  async deleteSealed(circleId, msgIds) {
    const tx = this._tx([SEALED], "readwrite");
    for (const id of msgIds) tx.objectStore(SEALED).delete([circleId, id]);
    return done(tx);
  }

  /**
   * @param {string} circleId
   * @returns {Promise<any>} what putCursor stored, or null
   */
  async getCursor(circleId) {
    const row = await this._get(CURSORS, circleId);
    return row === undefined ? null : row.value;
  }

  /**
   * @param {string} circleId
   * @param {any} value any structured-cloneable value
   */
  async putCursor(circleId, value) {
    return this._put(CURSORS, { circleId, value });
  }

  /**
   * @param {string} key
   * @returns {Promise<any>} the value, or undefined
   */
  async getSetting(key) {
    const row = await this._get(KV, `setting:${key}`);
    return row === undefined ? undefined : row.value;
  }

  /**
   * @param {string} key
   * @param {any} value any structured-cloneable value
   */
  async putSetting(key, value) {
    return this._put(KV, { value }, `setting:${key}`);
  }

  /** Close the database (another openStore of the same name then proceeds). */
  close() {
    this.db.close();
  }
}

/**
 * Open (creating if needed) the IndexedDB database `name`.
 * @param {string} [name]
 * @returns {Promise<Store>}
 */
export function openStore(name = "felund") {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, VERSION);
    request.onupgradeneeded = (e) => {
      const db = request.result;
      if (e.oldVersion < 1) {
        db.createObjectStore(KV);
        db.createObjectStore(CIRCLES, { keyPath: "circleId" });
        const messages = db.createObjectStore(MESSAGES, { keyPath: ["circleId", "msgId"] });
        messages.createIndex("byTime", ["circleId", "createdTs", "msgId"]);
        const outbox = db.createObjectStore(OUTBOX, { keyPath: "msgId" });
        outbox.createIndex("byCircle", "circleId");
        db.createObjectStore(CURSORS, { keyPath: "circleId" });
      }
      if (e.oldVersion < 2) db.createObjectStore(KEYS, { keyPath: ["circleId", "nodeId"] });
      if (e.oldVersion < 3) {
        db.createObjectStore(EPOCHS, { keyPath: ["circleId", "epochId"] });
        const sealed = db.createObjectStore(SEALED, { keyPath: ["circleId", "msgId"] });
        sealed.createIndex("byKey", ["circleId", "keyId"]);
      }
      if (e.oldVersion < 4) db.createObjectStore(CHANNEL_KEYS, { keyPath: ["circleId", "channelId", "part"] });
      // A channel's messages without reading the circle's: the page's first render.
      if (e.oldVersion < 5) {
        request.transaction.objectStore(MESSAGES).createIndex("byChannel", ["circleId", "channelId", "createdTs", "msgId"]);
      }
    };
    request.onsuccess = () => {
      const db = request.result;
      // Another tab upgrading the schema: step aside rather than block it.
      db.onversionchange = () => db.close();
      resolve(new Store(db));
    };
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("the felund database is held open by an older tab"));
  });
}

/**
 * Delete a database (tests, "forget everything").
 * @param {string} name
 * @returns {Promise<void>}
 */
export function deleteStore(name) {
  return req(indexedDB.deleteDatabase(name)).then(() => undefined);
}

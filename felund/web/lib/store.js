// The browser peer's state in IndexedDB, so that a reload keeps everything:
// identity (with its non-extractable signing and X25519 keys), circles (with their
// secrets), messages (opened, with their wire form so they can be served on,
// and whether their author's signature verified), the keys pinned for older
// node ids, the outbox of sent-but-unacknowledged messages, relay cursors and
// settings. One database per name (tests use
// their own names, or their own browser contexts).
//
// Each message stored gets the next arrival number (seq), like a node's
// store_seq, and messages read back in (createdTs, seq) order: the order of
// every felund screen (created_ts, then arrival, msg_id only breaking ties).

const VERSION = 2; // 2: the pinned keys (messages stored by 1 read as unverified)
const KV = "kv"; // identity and settings
const CIRCLES = "circles"; // keyPath circleId
const MESSAGES = "messages"; // keyPath [circleId, msgId]; index byTime
const OUTBOX = "outbox"; // keyPath msgId; index byCircle
const CURSORS = "cursors"; // keyPath circleId
const KEYS = "keys"; // keyPath [circleId, nodeId]: the key pinned for an older id, at first sight
const SEQ = "seq"; // kv key: the last arrival number given

function req(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
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
    const tx = this._tx([CIRCLES, MESSAGES, OUTBOX, CURSORS, KEYS], "readwrite");
    tx.objectStore(CIRCLES).delete(circleId);
    tx.objectStore(CURSORS).delete(circleId);
    tx.objectStore(KEYS).delete(IDBKeyRange.bound([circleId, ""], [circleId, "\uffff"]));
    tx.objectStore(MESSAGES).delete(IDBKeyRange.bound([circleId, ""], [circleId, "\uffff"]));
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
    const range = IDBKeyRange.bound([circleId, ""], [circleId, "\uffff"]);
    const rows = await req(this._tx([KEYS]).objectStore(KEYS).getAll(range));
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
   * A circle's messages in (createdTs, arrival) order.
   * @param {string} circleId
   * @param {{channelId?: string, limit?: number}} [options] limit: the newest this many
   * @returns {Promise<StoredMessage[]>}
   */
  async messages(circleId, { channelId, limit } = {}) {
    const index = this._tx([MESSAGES]).objectStore(MESSAGES).index("byTime");
    const range = IDBKeyRange.bound([circleId, -Infinity, ""], [circleId, Infinity, "\uffff"]);
    let all = (await req(index.getAll(range))).sort(byTime);
    if (channelId !== undefined) all = all.filter((m) => m.channelId === channelId);
    if (limit !== undefined && all.length > limit) all = all.slice(all.length - limit);
    return all;
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

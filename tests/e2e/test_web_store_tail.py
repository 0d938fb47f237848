"""The web store's channel tail (issue 19's first render): ``messages(circle, {channelId, limit})``
reads one channel's newest messages through the byChannel index (store VERSION 5), and gives
exactly what filtering and cutting the whole history gives, ties in one second included;
a database of VERSION 4 with messages gains the index on upgrade.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import in_page

FILL = """
const store = await L.store.openStore(arg.db);
const msgs = [];
for (let i = 0; i < 300; i += 1) {
  msgs.push({
    msgId: (1000 - i).toString(16).padStart(32, "0"), // msgId order against arrival order
    channelId: ["general", "random", "__control"][i % 3],
    authorNodeId: "ab".repeat(12),
    displayName: "ab",
    createdTs: 1_700_000_000 + Math.floor(i / 10), // ten a second: ties everywhere
    text: `m${i}`,
    verified: true,
    wire: {},
  });
}
await store.putMessages("c1", msgs.slice(0, 150));
await store.putMessages("c2", msgs.slice(0, 40)); // another circle, same channels
await store.putMessages("c1", msgs.slice(150));
const ids = (list) => list.map((m) => m.text);
const all = await store.messages("c1");
const out = { all: all.length, cases: [] };
for (const channelId of ["general", "random", "__control", "none"]) {
  const whole = all.filter((m) => m.channelId === channelId);
  out.cases.push([channelId, ids(await store.messages("c1", { channelId })), ids(whole)]);
  for (const limit of [1, 7, 10, 11, 99, 100, 101, 500]) {
    out.cases.push([`${channelId}/${limit}`, ids(await store.messages("c1", { channelId, limit })),
                    ids(whole.slice(-limit))]);
  }
}
for (const limit of [1, 15, 299, 300, 301]) {
  const tail = await store.messages("c1", { limit });
  out.cases.push([`all/${limit}`, ids(tail), ids(all.slice(-limit))]);
}
return out;
"""

V4_DATABASE = """
await new Promise((resolve, reject) => {
  const request = indexedDB.open(arg.db, 4);
  request.onupgradeneeded = () => {
    const db = request.result;
    db.createObjectStore("kv");
    db.createObjectStore("circles", {keyPath: "circleId"});
    const messages = db.createObjectStore("messages", {keyPath: ["circleId", "msgId"]});
    messages.createIndex("byTime", ["circleId", "createdTs", "msgId"]);
    db.createObjectStore("outbox", {keyPath: "msgId"}).createIndex("byCircle", "circleId");
    db.createObjectStore("cursors", {keyPath: "circleId"});
    db.createObjectStore("keys", {keyPath: ["circleId", "nodeId"]});
    db.createObjectStore("epochs", {keyPath: ["circleId", "epochId"]});
    db.createObjectStore("sealed", {keyPath: ["circleId", "msgId"]})
      .createIndex("byKey", ["circleId", "keyId"]);
    db.createObjectStore("channelKeys", {keyPath: ["circleId", "channelId", "part"]});
    const tx = request.transaction;
    for (let i = 0; i < 5; i += 1) {
      tx.objectStore("messages").put({
        circleId: "old", msgId: `m${i}`, channelId: i % 2 ? "general" : "other",
        authorNodeId: "cd".repeat(12), displayName: "cd", createdTs: 1_700_000_000 + i,
        text: `old${i}`, verified: false, signer: null, wire: {}, seq: i + 1,
      });
    }
  };
  request.onsuccess = () => { request.result.close(); resolve(); };
  request.onerror = () => reject(request.error);
});
const store = await L.store.openStore(arg.db);
return (await store.messages("old", { channelId: "general", limit: 1 })).map((m) => m.text)
  .concat((await store.messages("old", { channelId: "general" })).map((m) => m.text));
"""


def test_channel_tail_is_the_filtered_history_cut(lib_page: Any) -> None:
    got = in_page(lib_page, ("store",), FILL, {"db": "tail-test"})
    assert got["all"] == 300
    for name, tail, expected in got["cases"]:
        assert tail == expected, name
    assert any(name == "general/11" and len(tail) == 11 for name, tail, _ in got["cases"])


def test_a_version_4_database_gains_the_channel_index(lib_page: Any) -> None:
    got = in_page(lib_page, ("store",), V4_DATABASE, {"db": "v4-test"})
    assert got == ["old3", "old1", "old3"]

"""Range-based set reconciliation of message ids (negentropy-style), sans-IO.

Two nodes each hold an :class:`ItemSet` of ``(created_ts, msg_id)`` sorted by
that pair. A :class:`Reconciler` per side turns messages from the peer into
replies plus the ids to send (``have``) and to request (``need``); it never
touches a socket, a clock or the store. :func:`reconcile_pair` runs a whole
exchange in memory, for tests and benchmarks.

Wire form
---------
A message is a list of ranges ``[upper_ts, upper_id, mode, payload]``; a
range's lower bound is the previous range's upper bound (the first starts at
``MIN_BOUND``) and upper bounds strictly increase. Ranges past the last one
are skipped. ``(MAX_TS, "")`` is the upper bound meaning +infinity; items
have ``0 <= created_ts < MAX_TS`` so it is above all of them. Bound ids are
``""`` or a prefix of an id (0..64 chars of ``[A-Za-z0-9_-]``): a split
point is the shortest bound between two neighbouring items, usually
``(ts, "")``.

Ids in payloads are msgpack str, except that an id which is lowercase hex of
even length travels as its bytes (msgpack bin, 4..32 bytes): a 32-hex msg_id
costs 18 bytes instead of 34. Receivers accept either form for any id; ids
are never assumed to be hex.

- ``[ts, id, 0]`` SKIP: nothing to say (no payload element at all).
- ``[ts, id, 1, fp]`` FINGERPRINT: 16 bytes, see :meth:`ItemSet.fingerprint`.
  The receiver answers SKIP when equal, else its own ids (IDLIST) when it
  holds at most ``list_threshold`` items in the range, else ``buckets``
  sub-ranges of about equal own count with their FINGERPRINTs.
- ``[ts, id, 2, [id, ...]]`` IDLIST: the sender's complete ids in the range.
  The receiver now knows both sides of the range, records its have/need and
  must answer IDLIST_FINAL for exactly that range.
- ``[ts, id, 3, [[id, ...], bits]]`` IDLIST_FINAL, the answer to an IDLIST:
  the answerer's ids the lister lacks, and a bitmap over the IDLIST as sent
  (bit ``k`` = byte ``k // 8``, bit ``k % 8``, LSB first; exactly
  ``ceil(n / 8)`` bytes, unused bits zero) of the ids the answerer lacks. No
  reply. Sending differences rather than the answerer's own full list saves
  about a third of a d = 100 session's bytes; the cost is that a side
  remembers its IDLISTs of the previous message (and only those).

Each range is thus resolved exactly once, by one IDLIST / IDLIST_FINAL pair,
so the ``have`` and ``need`` of all steps of a session, concatenated, are
exactly the two differences, without duplicates (also deduplicated per
session against a lying peer).

Ending a session
----------------
A message "asks" when it holds a FINGERPRINT or an IDLIST. A side that
receives a message that asks always replies, with ``[]`` if it has nothing
to say; a side that receives a message that does not ask (``[]``, or only
SKIP and IDLIST_FINAL ranges) gets ``Step.reply is None``: it sends nothing
and its session is over. A side whose own reply does not ask is over too
(``receive`` again raises). So d = 0 costs the initiator's one fingerprint
and the responder's ``[]``: one round trip.

Guard rails
-----------
Every incoming message is validated before use (types, bounds, ids, sizes);
anything wrong raises ``InvalidMessage("recon", detail)`` and ends the
session. A side receives at most ``max_rounds`` messages. A message holds at
most ``MAX_RANGES`` ranges and ``MAX_IDS`` ids. A side keeps its own replies
within those caps (and about 2 MB of ids): when the next range's answer
would not fit it stops and sends one FINGERPRINT for everything from that
range to +infinity (as negentropy's frame-size limit does), which reopens
the rest, IDLISTs awaiting an answer included; an IDLIST_FINAL too large on
its own is replaced by a split of the range. A peer that lies (fingerprints
that never match, ids it lacks) is stopped by ``max_rounds``; ids are only
requested and offered, never trusted.

Fingerprints and their cost
---------------------------
``ItemSet`` keeps the items sorted and cut in chunks of up to 64 items
(new messages fill the last to 48), with no Python object per item. A
chunk holds its timestamps in an ``array('q')``; its ids as one ``bytes`` of 16 each when all are 32
lowercase hex (as felund and v1 make them), else as one string joined by
spaces (which no id holds); the sum of its ids' hashes (SHA-256 of the id
as a 256-bit int, so any id sums uniformly); and its marks: the sum of its
first 8, 16, 24... hashes, 32 bytes each. A table of the ids' 64-bit
``hash()`` answers ``in`` (``felund.gossip.idtable``). About 58 bytes an
item, its id included, against 185 when each id was a string in a list and
a set and each hash a 36-byte slot, and 330 with a tuple, ints and a prefix
sum per item. A chunk's ids are read back only where an operation needs
them (an id's place among equal timestamps, ``ids_at``, the ids beside a
mark, an insert). An insert moves the items of one chunk only; one item
among them updates the marks past it (each gains its hash and loses the
hash of the item that crossed it), a batch among them makes the chunk's
marks again, and a chunk grown past 64 items is cut.

For each chunk the count and the hash sum of the chunks before it are kept,
so the sum of the first k hashes is one of those plus the nearest mark of
k's chunk and the hashes between that mark and k (at most 4 SHA-256). A
bound is found by bisecting the chunks' first items, then the chunk's
timestamps, then the ids of a run of equal timestamps. A fingerprint is
thus a few bisections, a few hashes and a SHA-256: O(log n), about ten
microseconds. The counts and sums before each chunk are rebuilt lazily: an
insert into a chunk only marks those after it stale, and the next query
recomputes them, one addition per chunk (under 1 ms at 100k after an
insert at the front). New messages go to the last chunk, so the next
full-range fingerprint after them costs no rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final, NoReturn

import msgpack

from felund.errors import InvalidMessage
from felund.gossip.idtable import IdTable

Bound = tuple[int, str]
Ids = str | bytes  # a chunk's ids (see _join_ids)

MAX_TS: Final = 2**63 - 1  # largest msgpack int64: as an upper bound, +infinity
MIN_BOUND: Final[Bound] = (0, "")
MAX_BOUND: Final[Bound] = (MAX_TS, "")

SKIP: Final = 0
FINGERPRINT: Final = 1
IDLIST: Final = 2
IDLIST_FINAL: Final = 3

FINGERPRINT_SIZE: Final = 16
# Per message, either way. With these a message stays under 1 MiB, the native
# protocol's frame cap: 4,000 ranges of at most ~100 bytes, and 400 kB of ids.
MAX_RANGES: Final = 4_000
MAX_IDS: Final = 100_000  # per message, IDLIST and IDLIST_FINAL ids together
MAX_OUT_ID_BYTES: Final = 400_000  # encoded id bytes this side puts in one message

_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_HEX_ID = re.compile(r"(?:[0-9a-f]{2}){4,32}")  # sent as its bytes: half the size
_BOUND_ID = re.compile(r"[A-Za-z0-9_-]{0,64}")
_MOD: Final = 1 << 256
_KIND: Final = "recon"
_MAX_BUCKETS: Final = 1024
_MAX_LIST_THRESHOLD: Final = 1024
# A chunk holds at most 2 * _CHUNK items, and at least _CHUNK but the last: a cut
# makes chunks of _CHUNK to 2 * _CHUNK, new messages fill the last to _FILL and
# then make new ones. Within a chunk the sum
# of the first k hashes (mod 2**256, 32 bytes) is kept for every k that is a
# multiple of _STEP, so the sum up to any item is a mark and at most
# _STEP // 2 hashes of the ids around it.
_CHUNK: Final = 32
_FILL: Final = 48  # what appends fill a chunk to: room for inserts among its items
_STEP: Final = 8
_MARK: Final = 32
_HEX_LEN: Final = 32  # a msg_id as felund and v1 make it: 32 lowercase hex
_RAW_LEN: Final = _HEX_LEN // 2
_ONLY_HEX_LEN: Final = {_HEX_LEN}


def _fail(detail: str) -> NoReturn:
    raise InvalidMessage(_KIND, detail)


def _hashes(msg_ids: Iterable[str]) -> list[int]:
    """The ids' hashes: SHA-256 of each, read as a little-endian int."""
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    return [from_bytes(sha256(m.encode()).digest(), "little") for m in msg_ids]


def _marks(hashes: list[int], start: int = 0, base: int = 0) -> bytearray:
    """The marks of a chunk's items from index ``start`` on, of hashes ``hashes``, the sum
    of the items before them being ``base``: the sums at each multiple of _STEP."""
    out = bytearray()
    total = base
    for k, h in enumerate(hashes, start + 1):
        total += h
        if k % _STEP == 0:
            out += (total % _MOD).to_bytes(_MARK, "little")
    return out


def _chunk(keys: list[Bound], hashes: list[int]) -> tuple[array[int], Ids, bytearray, int]:
    """A chunk of these sorted keys, of these hashes: its timestamps, ids, marks and sum."""
    ids = _join_ids([m for _, m in keys])
    return array("q", [ts for ts, _ in keys]), ids, _marks(hashes), sum(hashes) % _MOD


def _bisect(stamps: array[int], ids: list[str] | Ids, bound: Bound) -> int:
    """bisect_left of ``bound`` in the keys ``zip(stamps, ids)``, sorted (``ids``: a list,
    or a chunk's, read only when the bound's timestamp is held)."""
    ts, msg_id = bound
    i = bisect_left(stamps, ts)
    if not msg_id:  # "" sorts first: (ts, "") is where ts begins
        return i
    j = bisect_right(stamps, ts, i)
    if i == j:
        return i
    if isinstance(ids, list):
        return bisect_left(ids, msg_id, i, j)
    return i + bisect_left(_ids_between(ids, i, j), msg_id)


def _join_ids(ids: list[str]) -> Ids:
    """A chunk's ids as it keeps them: 32-hex ids (ours, v1's) as their bytes, 16 each;
    any others as text, joined by spaces (which no id holds)."""
    if set(map(len, ids)) == _ONLY_HEX_LEN:
        joined = "".join(ids)
        with contextlib.suppress(ValueError):  # not hex
            raw = bytes.fromhex(joined)
            if raw.hex() == joined:  # lowercase, as it will be read back
                return raw
    return " ".join(ids)


def _extend_ids(ids: Ids, new: list[str]) -> Ids:
    """A chunk's ids with ``new`` after them."""
    if not ids:
        return _join_ids(new)
    if isinstance(ids, str):  # it holds an id that is not 32-hex: it stays text
        return " ".join([ids, *new])
    more = _join_ids(new)
    return ids + more if isinstance(more, bytes) else " ".join([*_split_ids(ids), *new])


def _insert_id(ids: Ids, r: int, msg_id: str) -> Ids:
    """A chunk's ids with ``msg_id`` put at index ``r``."""
    if isinstance(ids, bytes):
        raw = _join_ids([msg_id])
        if isinstance(raw, bytes):
            return ids[: r * _RAW_LEN] + raw + ids[r * _RAW_LEN :]
    every = _split_ids(ids)
    every.insert(r, msg_id)
    return _join_ids(every)


def _split_ids(ids: Ids) -> list[str]:
    """A chunk's ids, as a list."""
    if isinstance(ids, str):
        return ids.split(" ") if ids else []
    return _ids_between(ids, 0, len(ids) // _RAW_LEN)


def _ids_between(ids: Ids, i: int, j: int) -> list[str]:
    """A chunk's ids ``i`` to ``j - 1``, reading no further."""
    if isinstance(ids, str):
        return ids.split(" ", j)[i:j]
    text = ids[i * _RAW_LEN : j * _RAW_LEN].hex()
    return [text[k : k + _HEX_LEN] for k in range(0, len(text), _HEX_LEN)]


def _digest(total: int, count: int) -> bytes:
    data = (total % _MOD).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.sha256(data).digest()[:FINGERPRINT_SIZE]


def _check_item(ts: object, msg_id: object) -> None:
    if type(ts) is not int or not 0 <= ts < MAX_TS:
        raise ValueError(f"created_ts must be an int in [0, 2**63 - 1), not {ts!r}")
    if not isinstance(msg_id, str) or not _ID.fullmatch(msg_id):
        raise ValueError(f"msg_id must be 8..64 chars of [A-Za-z0-9_-], not {msg_id!r}")


def _separator(prev: Bound, cur: Bound) -> Bound:
    """The shortest bound ``b`` with ``prev < b <= cur`` (``prev < cur``)."""
    if cur[0] != prev[0]:
        return (cur[0], "")
    a, b = prev[1], cur[1]
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return (cur[0], b[: n + 1])


class ItemSet:
    """A sorted set of ``(created_ts, msg_id)`` with O(log n) range fingerprints.

    A msg_id is in the set at most once: adding it again, even with another
    timestamp, is a no-op. Items are addressed by their index in the sorted
    order (:meth:`index` of a bound, :meth:`key`, :meth:`ids_at`,
    :meth:`fingerprint_at`); see the module docstring for the layout.
    """

    __slots__ = (
        "_counts",
        "_heads_ids",
        "_heads_ts",
        "_ids",
        "_known",
        "_len",
        "_marks",
        "_stamps",
        "_sums",
        "_totals",
        "_valid",
    )

    def __init__(self, items: Iterable[tuple[int, str]] = ()) -> None:
        # The items in order, cut in chunks (see _CHUNK; one empty chunk at first).
        self._stamps: list[array[int]] = [array("q")]  # created_ts
        self._ids: list[Ids] = [b""]  # each chunk's (see _join_ids)
        self._sums: list[int] = [0]  # of each chunk's hashes, mod 2**256
        self._marks: list[bytearray] = [bytearray()]  # of each chunk (see _marks)
        # The first item of each chunk after the first: which chunk an item goes to.
        self._heads_ts = array("q")
        self._heads_ids: list[str] = []
        # Of the chunks before chunk c, for c up to the number of chunks: how many
        # items, and the sum of their hashes. Entries [:_valid] are up to date.
        self._counts = array("q", [0, 0])
        self._totals: list[int] = [0, 0]
        self._valid = 1
        self._len = 0
        self._known = IdTable()
        self.add_many(items)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._known

    def add(self, ts: int, msg_id: str) -> bool:
        """Add one item; False if msg_id is already present. Raises ValueError if malformed."""
        if msg_id in self._known:  # first: most adds are of ids already known
            return False
        _check_item(ts, msg_id)
        key = (ts, msg_id)
        self._put(_bisect(self._heads_ts, self._heads_ids, key), [key], _hashes([msg_id]))
        self._known.add(msg_id)
        return True

    def add_many(self, items: Iterable[tuple[int, str]]) -> int:
        """Add many items, sorting once; the number actually added."""
        firsts: dict[str, int] = {}  # an id's first timestamp wins, as in add
        valid = _ID.fullmatch  # inlined checks: this is the bulk path
        for ts, msg_id in items:
            if type(ts) is not int or not 0 <= ts < MAX_TS:
                _check_item(ts, msg_id)
            if not isinstance(msg_id, str) or not valid(msg_id):
                _check_item(ts, msg_id)
            firsts.setdefault(msg_id, ts)
        # All checked: from here the ids are held.
        new = sorted([(firsts[m], m) for m in self._known.take(firsts)])
        if not new:
            return 0
        hashes = _hashes([m for _, m in new])
        # What goes to one chunk is a run of the new items, ending at the next chunk's head.
        heads_ts, heads_ids = self._heads_ts, self._heads_ids
        runs: list[tuple[int, int, int]] = []
        a = 0
        while a < len(new):
            c = _bisect(heads_ts, heads_ids, new[a])
            b = bisect_left(new, (heads_ts[c], heads_ids[c]), a) if c < len(heads_ts) else len(new)
            runs.append((c, a, b))
            a = b
        for c, a, b in reversed(runs):  # the last first: a cut chunk moves the later ones
            self._put(c, new[a:b], hashes[a:b])
        return len(new)

    def fingerprint(self, lo: Bound, hi: Bound) -> bytes:
        """The 16-byte fingerprint of the items with ``lo <= item < hi``.

        SHA-256 of (sum of SHA-256(msg_id) as little-endian 256-bit ints, mod
        2**256, as 32 little-endian bytes) followed by (count as 8 little-endian
        bytes), truncated to 16 bytes.
        """
        return self.fingerprint_at(*self._span(lo, hi))

    def ids(self, lo: Bound, hi: Bound) -> list[str]:
        """The msg_ids of the items with ``lo <= item < hi``, in order."""
        return self.ids_at(*self._span(lo, hi))

    def count(self, lo: Bound, hi: Bound) -> int:
        """The number of items with ``lo <= item < hi``."""
        i, j = self._span(lo, hi)
        return j - i

    def index(self, bound: Bound) -> int:
        """The number of items below ``bound``."""
        c = _bisect(self._heads_ts, self._heads_ids, bound)
        self._ensure(c)
        return self._counts[c] + _bisect(self._stamps[c], self._ids[c], bound)

    def key(self, i: int) -> Bound:
        """The item at index ``i`` of the sorted order."""
        c, r = self._locate(i)
        return self._stamps[c][r], _ids_between(self._ids[c], r, r + 1)[0]

    def ids_at(self, i: int, j: int) -> list[str]:
        """The msg_ids of the items at indices ``i`` to ``j - 1``."""
        if i >= j:
            return []
        (c, r), (d, s) = self._locate(i), self._locate(j)
        chunks = self._ids
        if c == d:
            return _ids_between(chunks[c], r, s)
        out = _split_ids(chunks[c])[r:]
        for k in range(c + 1, d):
            out += _split_ids(chunks[k])
        return out + _ids_between(chunks[d], 0, s)

    def fingerprint_at(self, i: int, j: int) -> bytes:
        """The fingerprint of the items at indices ``i`` to ``j - 1`` (see :meth:`fingerprint`)."""
        return _digest(self._prefix(j) - self._prefix(i), j - i)

    def fingerprints_at(self, edges: list[int]) -> list[bytes]:
        """The fingerprints of the items between each two consecutive indices of ``edges``
        (ascending), each edge's sum computed once."""
        sums = [self._prefix(e) for e in edges]
        return [
            _digest(sums[k + 1] - sums[k], edges[k + 1] - edges[k]) for k in range(len(edges) - 1)
        ]

    def _span(self, lo: Bound, hi: Bound) -> tuple[int, int]:
        i = self.index(lo)
        return i, max(i, self.index(hi))

    def _put(self, c: int, keys: list[Bound], hashes: list[int]) -> None:
        """Add sorted new ``keys`` (with their hashes) that belong to chunk ``c``."""
        stamps, held = self._stamps[c], self._ids[c]
        n = len(stamps)
        self._len += len(keys)
        self._valid = min(self._valid, c + 1)
        last = c == len(self._stamps) - 1
        room = (_FILL if last else 2 * _CHUNK) - n
        if (not n or keys[0] > (stamps[-1], _ids_between(held, n - 1, n)[0])) and (
            last or len(keys) <= room
        ):
            # After the others: what is held is never hashed again. The last chunk (new
            # messages) fills up to _FILL and the rest makes new chunks after it, so
            # only the last chunk is ever smaller than _CHUNK.
            if room > 0:
                stamps.extend([k[0] for k in keys[:room]])
                self._ids[c] = _extend_ids(held, [k[1] for k in keys[:room]])
                self._marks[c] += _marks(hashes[:room], n, self._sums[c])
                self._sums[c] = (self._sums[c] + sum(hashes[:room])) % _MOD
            if len(keys) > room:
                cut = range(max(room, 0), len(keys), _FILL)
                self._add_chunks(c + 1, [(keys[a : a + _FILL], hashes[a : a + _FILL]) for a in cut])
            return
        if len(keys) == 1 and n < 2 * _CHUNK:
            self._insert(c, keys[0], hashes[0])
            return
        # Among them: the chunk is made again (at most 64 held and the new ones).
        pairs = sorted([*zip(stamps, _split_ids(held), strict=True), *keys])
        every = _hashes([m for _, m in pairs])
        if len(pairs) > 2 * _CHUNK:
            self._split(c, pairs, every)
        else:
            self._set_chunk(c, pairs, every)

    def _insert(self, c: int, key: Bound, h: int) -> None:
        """Put one item of hash ``h`` among chunk ``c``'s (which has room for it)."""
        stamps, held, marks = self._stamps[c], self._ids[c], self._marks[c]
        n = len(stamps)
        r = _bisect(stamps, held, key)
        # A mark past r now sums one item more, and the one before it less: that old
        # item crossed the mark. A new mark at the new end is the whole chunk's sum.
        later = range(r // _STEP + 1, n // _STEP + 1)
        crossed_ids = [_ids_between(held, k * _STEP - 1, k * _STEP)[0] for k in later]
        for k, crossed in zip(later, _hashes(crossed_ids), strict=True):
            mark = (self._mark(c, k) - crossed + h) % _MOD
            marks[(k - 1) * _MARK : k * _MARK] = mark.to_bytes(_MARK, "little")
        self._sums[c] = (self._sums[c] + h) % _MOD
        if (n + 1) % _STEP == 0:
            marks += self._sums[c].to_bytes(_MARK, "little")
        stamps.insert(r, key[0])
        self._ids[c] = _insert_id(held, r, key[1])

    def _split(self, c: int, keys: list[Bound], hashes: list[int]) -> None:
        """Make chunk ``c``, of these sorted ``keys`` and their ``hashes``, chunks of
        ``_CHUNK`` to ``2 * _CHUNK`` items."""
        n = len(keys)
        parts = n // _CHUNK
        spans = pairwise([n * k // parts for k in range(parts + 1)])
        pieces = [(keys[a:b], hashes[a:b]) for a, b in spans]
        self._set_chunk(c, *pieces[0])
        self._add_chunks(c + 1, pieces[1:])

    def _set_chunk(self, c: int, keys: list[Bound], hashes: list[int]) -> None:
        """Chunk ``c`` holds these sorted ``keys``, whose ``hashes`` are these."""
        self._stamps[c], self._ids[c], self._marks[c], self._sums[c] = _chunk(keys, hashes)

    def _add_chunks(self, c: int, pieces: list[tuple[list[Bound], list[int]]]) -> None:
        """New chunks from ``c`` on, each of sorted keys and their hashes (all after the
        chunk before ``c`` and before the one now at ``c``)."""
        made = [_chunk(keys, hashes) for keys, hashes in pieces]
        self._stamps[c:c] = [m[0] for m in made]
        self._ids[c:c] = [m[1] for m in made]
        self._marks[c:c] = [m[2] for m in made]
        self._sums[c:c] = [m[3] for m in made]
        self._heads_ts[c - 1 : c - 1] = array("q", [keys[0][0] for keys, _ in pieces])
        self._heads_ids[c - 1 : c - 1] = [keys[0][1] for keys, _ in pieces]
        self._counts[c:c] = array("q", [0] * len(pieces))
        self._totals[c:c] = [0] * len(pieces)
        self._valid = min(self._valid, c)

    def _ensure(self, c: int) -> None:
        """Bring the counts and totals of the chunks before chunk ``c`` up to date."""
        if c < self._valid:
            return
        counts, totals, stamps, sums = self._counts, self._totals, self._stamps, self._sums
        for k in range(self._valid, c + 1):
            counts[k] = counts[k - 1] + len(stamps[k - 1])
            totals[k] = (totals[k - 1] + sums[k - 1]) % _MOD
        self._valid = c + 1

    def _locate(self, i: int) -> tuple[int, int]:
        """The chunk of index ``i`` (``0 <= i <= len``) and the place in it."""
        chunks = len(self._stamps)
        if self._valid <= chunks:  # tested here: most calls find them up to date
            self._ensure(chunks)
        c = bisect_right(self._counts, i, 0, chunks) - 1
        return c, i - self._counts[c]

    def _prefix(self, i: int) -> int:
        """The sum of the first ``i`` hashes: a mark, and the hashes from it to item ``i``."""
        c, r = self._locate(i)
        k, off = divmod(r, _STEP)
        if not off:
            return self._totals[c] + self._mark(c, k)
        n = len(self._stamps[c])
        up = min((k + 1) * _STEP, n)  # the next mark, or the chunk's end
        ids = self._ids[c]
        if off <= up - r:
            return self._totals[c] + self._mark(c, k) + sum(_hashes(_ids_between(ids, r - off, r)))
        top = self._mark(c, k + 1) if up % _STEP == 0 else self._sums[c]
        return self._totals[c] + top - sum(_hashes(_ids_between(ids, r, up)))

    def _mark(self, c: int, k: int) -> int:
        """The sum of chunk ``c``'s first ``k * _STEP`` hashes."""
        if not k:
            return 0
        return int.from_bytes(self._marks[c][(k - 1) * _MARK : k * _MARK], "little")


@dataclass(frozen=True, slots=True)
class Step:
    """What to do after a message: send ``reply`` (unless None), send ``have``, fetch ``need``."""

    reply: list[Any] | None
    have: list[str]
    need: list[str]


@dataclass(frozen=True, slots=True)
class _Range:
    lo: Bound
    hi: Bound
    mode: int
    payload: Any


@dataclass(slots=True)
class _Answer:
    """This side's answer to one incoming range, applied only if it fits."""

    ranges: list[list[Any]]
    ids: int = 0
    id_bytes: int = 0
    lists: list[tuple[Bound, Bound, list[str]]] = field(default_factory=list)
    have: list[str] = field(default_factory=list)
    need: list[str] = field(default_factory=list)


def _encode_ids(ids: list[str]) -> tuple[list[str | bytes], int]:
    """Ids as sent (lowercase hex of even length as bytes), and their size in bytes."""
    wire: list[str | bytes] = [bytes.fromhex(m) if _HEX_ID.fullmatch(m) else m for m in ids]
    return wire, sum(map(len, wire))


def _ids(payload: object) -> list[str]:
    """Decode and validate an id list from a peer."""
    if not isinstance(payload, list):
        _fail("id list is not a list")
    if len(payload) > MAX_IDS:
        _fail("too many ids")
    ids: list[str] = []
    for m in payload:
        if isinstance(m, bytes) and 4 <= len(m) <= 32:
            ids.append(m.hex())
        elif isinstance(m, str) and _ID.fullmatch(m):
            ids.append(m)
        else:
            _fail("malformed id")
    if len(set(ids)) != len(ids):
        _fail("duplicate ids")
    return ids


def _parse(message: object) -> list[_Range]:
    """Validate a peer's message completely; its ranges with explicit lower bounds."""
    if not isinstance(message, list):
        _fail("message is not a list")
    if len(message) > MAX_RANGES:
        _fail("too many ranges")
    ranges: list[_Range] = []
    lo = MIN_BOUND
    n_ids = 0
    for item in message:
        if not isinstance(item, list) or len(item) not in (3, 4):
            _fail("range is not a list of 3 or 4 elements")
        ts, bound_id, mode = item[0], item[1], item[2]
        if type(ts) is not int or not 0 <= ts <= MAX_TS:
            _fail("bound timestamp out of range")
        if not isinstance(bound_id, str) or not _BOUND_ID.fullmatch(bound_id):
            _fail("malformed bound id")
        if ts == MAX_TS and bound_id:
            _fail("bound beyond +infinity")
        hi = (ts, bound_id)
        if hi <= lo:
            _fail("bounds not increasing")
        if type(mode) is not int or not SKIP <= mode <= IDLIST_FINAL:
            _fail("unknown mode")
        if (len(item) == 3) != (mode == SKIP):
            _fail("payload missing" if mode != SKIP else "payload on a skip")
        payload: Any = None
        if mode == FINGERPRINT:
            payload = item[3]
            if not isinstance(payload, bytes) or len(payload) != FINGERPRINT_SIZE:
                _fail("fingerprint is not 16 bytes")
        elif mode == IDLIST:
            payload = _ids(item[3])
            n_ids += len(payload)
        elif mode == IDLIST_FINAL:
            final = item[3]
            if not isinstance(final, list) or len(final) != 2 or not isinstance(final[1], bytes):
                _fail("final is not [ids, bitmap]")
            payload = (_ids(final[0]), final[1])
            n_ids += len(payload[0])
        if n_ids > MAX_IDS:
            _fail("too many ids")
        ranges.append(_Range(lo, hi, mode, payload))
        lo = hi
    return ranges


def _asks(message: list[Any]) -> bool:
    return any(r[2] in (FINGERPRINT, IDLIST) for r in message)


def bytes_hint(message: Any) -> int:
    """The msgpack-encoded size of a message, in bytes."""
    return len(msgpack.packb(message))


class Reconciler:
    """One side of one reconciliation session over ``items`` (see the module docstring).

    The items may change during the session; each message is answered from
    the set as it is then. A Reconciler serves one session and keeps no state
    across sessions.
    """

    bytes_hint = staticmethod(bytes_hint)

    def __init__(
        self,
        items: ItemSet,
        *,
        buckets: int = 16,
        list_threshold: int = 32,
        max_rounds: int = 10,
    ) -> None:
        if not 2 <= buckets <= _MAX_BUCKETS:
            raise ValueError(f"buckets must be in 2..{_MAX_BUCKETS}")
        if not 1 <= list_threshold <= _MAX_LIST_THRESHOLD:
            raise ValueError(f"list_threshold must be in 1..{_MAX_LIST_THRESHOLD}")
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        self._items = items
        self._buckets = buckets
        self._list_threshold = list_threshold
        self._max_rounds = max_rounds
        self._rounds = 0
        self._started = False
        self._over = False
        self._lists: dict[tuple[Bound, Bound], list[str]] = {}  # IDLISTs we await finals for
        self._have_seen: set[str] = set()
        self._need_seen: set[str] = set()

    @property
    def rounds(self) -> int:
        """The number of messages received so far."""
        return self._rounds

    @property
    def over(self) -> bool:
        """Whether this side's session has ended (nothing more will be sent or accepted)."""
        return self._over

    def initiate(self) -> list[Any]:
        """The first message: one fingerprint over everything."""
        if self._started:
            raise RuntimeError("initiate() must be the first call of a session")
        self._started = True
        return [[MAX_TS, "", FINGERPRINT, self._items.fingerprint(MIN_BOUND, MAX_BOUND)]]

    def receive(self, message: Any) -> Step:
        """Answer a peer's message; raises InvalidMessage (and ends the session) if it is bad."""
        try:
            return self._receive(message)
        except InvalidMessage:
            self._over = True
            raise

    def _receive(self, message: Any) -> Step:
        if self._over:
            _fail("session is over")
        self._started = True
        self._rounds += 1
        if self._rounds > self._max_rounds:
            _fail("too many rounds")
        ranges = _parse(message)
        self._check_answers(ranges)
        lists, self._lists = self._lists, {}
        have: list[str] = []
        need: list[str] = []
        out: list[list[Any]] = []
        n_ids = n_id_bytes = 0
        deferred = False
        items = self._items
        at, at_index = MIN_BOUND, 0  # ranges are contiguous: reuse the last bisection
        for r in ranges:
            if r.mode == IDLIST_FINAL:
                self._take_final(r, lists[r.lo, r.hi], have, need)
            if deferred:
                continue
            if r.mode in (SKIP, IDLIST_FINAL):
                _skip(out, r.hi)
                continue
            i = at_index if r.lo == at else items.index(r.lo)
            j = items.index(r.hi)  # r.hi > r.lo: not below i
            at, at_index = r.hi, j
            answer = self._answer(r, i, j)
            if answer is None:
                _skip(out, r.hi)
                continue
            too_big = not _fits(answer, len(out), n_ids, n_id_bytes)
            if too_big and r.mode == IDLIST and j - i > self._list_threshold:
                answer = self._split(r.lo, r.hi, i, j)  # reopen instead of a huge final
            if not _fits(answer, len(out), n_ids, n_id_bytes):
                assert out, "a single answer always fits an empty message"
                fp = self._items.fingerprint(r.lo, MAX_BOUND)
                out.append([MAX_TS, "", FINGERPRINT, fp])
                deferred = True
                continue
            out.extend(answer.ranges)
            n_ids += answer.ids
            n_id_bytes += answer.id_bytes
            for lo, hi, ids in answer.lists:
                self._lists[lo, hi] = ids
            _note(answer.have, self._have_seen, have)
            _note(answer.need, self._need_seen, need)
        while out and out[-1][2] == SKIP:
            out.pop()
        if not any(r.mode in (FINGERPRINT, IDLIST) for r in ranges):
            self._over = True
            return Step(None, have, need)
        if not _asks(out):
            self._over = True
        return Step(out, have, need)

    def _check_answers(self, ranges: list[_Range]) -> None:
        """Every IDLIST we sent gets its final, or the peer reopened its range."""
        opened_lo: list[Bound] = []
        opened_hi: list[Bound] = []
        finals: set[tuple[Bound, Bound]] = set()
        for r in ranges:
            if r.mode in (FINGERPRINT, IDLIST):
                opened_lo.append(r.lo)
                opened_hi.append(r.hi)
            elif r.mode == IDLIST_FINAL:
                if (r.lo, r.hi) not in self._lists:
                    _fail("final for a range we did not list")
                finals.add((r.lo, r.hi))
        for lo, hi in self._lists:
            if (lo, hi) in finals:
                continue
            k = bisect_right(opened_hi, lo)  # the first opened range ending after lo
            if k == len(opened_hi) or opened_lo[k] >= hi:
                _fail("idlist left unanswered")

    def _take_final(self, r: _Range, sent: list[str], have: list[str], need: list[str]) -> None:
        theirs, bits = r.payload
        n = len(sent)
        if len(bits) != (n + 7) // 8 or (n % 8 and bits[-1] >> (n % 8)):
            _fail("final bitmap does not match our list")
        sent_set = set(sent)
        if any(m in sent_set for m in theirs):
            _fail("final offers an id we listed")
        _note([m for m in theirs if m not in self._items], self._need_seen, need)
        lacking = [m for k, m in enumerate(sent) if bits[k >> 3] >> (k & 7) & 1]
        _note(lacking, self._have_seen, have)

    def _answer(self, r: _Range, i: int, j: int) -> _Answer | None:
        """The answer to a FINGERPRINT or IDLIST range holding own items i..j; None to skip it."""
        items = self._items
        if r.mode == FINGERPRINT:
            if items.fingerprint_at(i, j) == r.payload:
                return None
            if j - i <= self._list_threshold:
                mine = items.ids_at(i, j)
                wire, size = _encode_ids(mine)
                return _Answer(
                    [[r.hi[0], r.hi[1], IDLIST, wire]],
                    ids=len(mine),
                    id_bytes=size,
                    lists=[(r.lo, r.hi, mine)],
                )
            return self._split(r.lo, r.hi, i, j)
        theirs: list[str] = r.payload
        their_set = set(theirs)
        have = [m for m in items.ids_at(i, j) if m not in their_set]
        bits = bytearray((len(theirs) + 7) // 8)
        need = []
        for k, m in enumerate(theirs):
            if m not in items:
                bits[k >> 3] |= 1 << (k & 7)
                need.append(m)
        wire, size = _encode_ids(have)
        return _Answer(
            [[r.hi[0], r.hi[1], IDLIST_FINAL, [wire, bytes(bits)]]],
            ids=len(have),
            id_bytes=size,
            have=have,
            need=need,
        )

    def _split(self, lo: Bound, hi: Bound, i: int, j: int) -> _Answer:
        """``buckets`` sub-ranges of [lo, hi) of about equal own count, fingerprinted."""
        items = self._items
        n = j - i
        m = min(self._buckets, n)
        edges = [i + n * k // m for k in range(m + 1)]
        ranges: list[list[Any]] = []
        for k, fp in enumerate(items.fingerprints_at(edges), 1):
            b = hi if k == m else _separator(items.key(edges[k] - 1), items.key(edges[k]))
            ranges.append([b[0], b[1], FINGERPRINT, fp])
        return _Answer(ranges)


def _fits(answer: _Answer, n_ranges: int, n_ids: int, n_id_bytes: int) -> bool:
    """Whether a message so far can take ``answer`` and still a deferral (skip + fingerprint)."""
    return (
        n_ranges + len(answer.ranges) + 2 <= MAX_RANGES
        and n_ids + answer.ids <= MAX_IDS
        and n_id_bytes + answer.id_bytes <= MAX_OUT_ID_BYTES
    )


def _skip(out: list[list[Any]], hi: Bound) -> None:
    if out and out[-1][2] == SKIP:
        out[-1] = [hi[0], hi[1], SKIP]
    else:
        out.append([hi[0], hi[1], SKIP])


def _note(ids: list[str], seen: set[str], into: list[str]) -> None:
    for m in ids:
        if m not in seen:
            seen.add(m)
            into.append(m)


def reconcile_pair(
    a: ItemSet,
    b: ItemSet,
    *,
    buckets: int = 16,
    list_threshold: int = 32,
    max_rounds: int = 10,
) -> tuple[int, int, list[str], list[str]]:
    """Run a whole session in memory, ``a`` initiating; every message goes through msgpack.

    Returns (round trips, total bytes both ways, ids a lacks, ids b lacks);
    round trips = messages / 2, rounded up.
    """
    options = {"buckets": buckets, "list_threshold": list_threshold, "max_rounds": max_rounds}
    side_a, side_b = Reconciler(a, **options), Reconciler(b, **options)
    a_need: list[str] = []
    b_need: list[str] = []
    wire = msgpack.packb(side_a.initiate())
    messages, total = 1, len(wire)
    turn = [(side_b, b_need), (side_a, a_need)]
    while True:
        side, needs = turn[(messages - 1) % 2]
        step = side.receive(msgpack.unpackb(wire, raw=False))
        needs.extend(step.need)
        if step.reply is None:
            break
        wire = msgpack.packb(step.reply)
        messages += 1
        total += len(wire)
    return (messages + 1) // 2, total, a_need, b_need

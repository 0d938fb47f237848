"""Batch signatures: one Ed25519 signature over a Merkle tree of up to 64 messages.

An Ed25519 verify costs 50 to 350 us here, two to ten times all the store's
other work on a message, so a node that writes many messages at once (``send --stdin``,
a post of many) signs them in batches: each message then carries the one
signature on its batch's root and the path from its own leaf to that root. A
reader recomputes the root from the message and its path (a few SHA-256) and
verifies the signature on a root once: the other messages of the batch hit
the cache of verified roots (``signing.check``).

The tree, exactly (every hash is SHA-256, ``||`` concatenation):

- leaf i (0 <= i < n, n <= BATCH_LEAVES) = H("felund-leaf-v1" || u32be(i) ||
  signing_bytes(message i)). The index is in the leaf so that a message read
  with another index than its own cannot reach the root (with promotion below,
  the path alone does not fix the index: leaf 4 of 5 and leaf 1 of 2 both
  climb one step from the left).
- A level of m nodes makes the next: node j = H("felund-node-v1" || node 2j ||
  node 2j+1) for each pair; when m is odd, the last node is promoted unchanged.
  The root is the one node of the last level (n >= 2: a batch of one is not
  made; a single message keeps the single form).
- The signature is Ed25519 over u32be(15) || "felund-batch-v1" || root (the
  context length-prefixed like signing_bytes, so no batch bytes are ever
  message bytes).
- A message's path is its sibling at each level where it has one, from the
  leaf up, 32 bytes each, concatenated (std base64 in the plaintext's "path").
  A reader finds the sides from the index alone: at level k the node sits at
  position i >> k; if bit k of i is 1 its sibling is on the left; if 0, its
  sibling is on the right for the lowest (len(path) - popcount(i)) such levels
  and it is promoted at the others (the positions whose right sibling exists
  are exactly the lowest zero bits, since the leaf count is beyond them).
"""

from __future__ import annotations

import functools
import hashlib

BATCH_LEAVES = 64  # messages under one signature at most
MAX_PATH = 6  # hashes in a path: log2(BATCH_LEAVES)
HASH_LEN = 32
MAX_PATH_B64_LEN = 4 * -(-MAX_PATH * HASH_LEN // 3)  # the longest "path" in a plaintext
LEAF_CONTEXT = b"felund-leaf-v1"
NODE_CONTEXT = b"felund-node-v1"
BATCH_CONTEXT = b"felund-batch-v1"


def leaf_hash(index: int, data: bytes) -> bytes:
    """The leaf of the message of signing bytes ``data`` at ``index`` in its batch."""
    return hashlib.sha256(LEAF_CONTEXT + index.to_bytes(4, "big") + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_CONTEXT + left + right).digest()


# A reader climbs each message of a batch to the same root: the messages of a batch of 64
# share its 63 inner nodes, so each is hashed once rather than once per message below it
# (6 hashes a message become about 1). Bounded: a miss costs the hash, as without it.
_climb = functools.lru_cache(maxsize=1024)(_node)


def batch_bytes(root: bytes) -> bytes:
    """The bytes signed for a batch: its context, length-prefixed, and its root."""
    return len(BATCH_CONTEXT).to_bytes(4, "big") + BATCH_CONTEXT + root


def tree(datas: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over 2 to BATCH_LEAVES messages' signing bytes, and each one's path."""
    if not 2 <= len(datas) <= BATCH_LEAVES:
        raise ValueError(f"a batch holds 2 to {BATCH_LEAVES} messages")
    levels = [[leaf_hash(i, data) for i, data in enumerate(datas)]]
    while len(levels[-1]) > 1:
        level = levels[-1]
        levels.append(
            [
                _node(level[j], level[j + 1]) if j + 1 < len(level) else level[j]
                for j in range(0, len(level), 2)
            ]
        )
    # A node at position p of a level has its parent at p // 2 (promoted or not).
    paths = [
        b"".join(
            level[i >> k ^ 1] for k, level in enumerate(levels[:-1]) if i >> k ^ 1 < len(level)
        )
        for i in range(len(datas))
    ]
    return levels[-1][0], paths


def path_fits(index: int, hashes: int) -> bool:
    """Whether a leaf index and a path of so many hashes can belong to a batch."""
    return 0 <= index < BATCH_LEAVES and index.bit_count() <= hashes <= MAX_PATH and hashes > 0


def _sides(index: int, hashes: int) -> tuple[bool, ...]:
    # For each hash of a path, from the leaf up: whether that sibling is on the left.
    rights = hashes - index.bit_count()  # levels with a right sibling
    out: list[bool] = []
    for level in range(MAX_PATH):
        if len(out) == hashes:
            break
        if index >> level & 1:
            out.append(True)
        elif rights > 0:
            out.append(False)
            rights -= 1
    return tuple(out)


# Every shape path_fits admits, worked out once: a reader climbs without bit twiddling.
_SIDES = {
    (i, n): _sides(i, n)
    for i in range(BATCH_LEAVES)
    for n in range(1, MAX_PATH + 1)
    if path_fits(i, n)
}


def root_of(leaf: bytes, index: int, path: bytes) -> bytes:
    """The root a leaf at ``index`` reaches by ``path``; ValueError unless ``path_fits``
    admits its shape."""
    sides = _SIDES.get((index, len(path) // HASH_LEN)) if len(path) % HASH_LEN == 0 else None
    if sides is None:
        raise ValueError("a leaf index and a path of a shape no batch has")
    node = leaf
    for k, left in enumerate(sides):
        sibling = path[k * HASH_LEN : (k + 1) * HASH_LEN]
        node = _climb(sibling, node) if left else _climb(node, sibling)
    return node

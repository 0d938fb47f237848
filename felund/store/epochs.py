"""The epoch secrets a node holds for one circle, and which one seals and opens what (sans-IO).

The root secret (epoch 0) is the one invite codes gave before any removal:
``circles.secret``, from which the circle id derives. A node that joined by
an epoch's code keeps that epoch's secret there until its EPOCH_LINK walk
reaches the root (``root`` is None meanwhile: the secret there does not
derive the circle id). Epochs n > 0 are kept in ``epoch_keys``.

A private channel's message secrets (``felund.trust.channels``) derive from
what ``channel_keys`` holds (a key channel's typed key, an invite channel's
epoch secrets) and each circle epoch held: ``Keys.secret_for``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from felund.trust import channels as chan
from felund.trust.wrap import ROOT_KEY_ID, SECRET_LEN, epoch_key_id, parse_key_id
from felund.v1 import ids
from felund.v1.chatmodel import Channel

MAX_AHEAD = 16  # a key_id naming an epoch this far beyond the newest held is kept sealed
MAX_SEALED = 50_000  # sealed rows kept per circle
MAX_ANSWERED = 64  # epochs in the circles answer
NOT_CAUGHT_UP = (
    "this node does not hold the circle's newest key yet: wait until it has caught up "
    "with the other members, then try again"
)


def link_of(text: str) -> tuple[str, str] | None:
    """(epoch_id, prev secret) of an EPOCH_LINK's text; None for any other text."""
    if '"EPOCH_LINK"' not in text:  # most control events: no JSON parse
        return None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("t") != "EPOCH_LINK":
        return None
    epoch_id, prev = body.get("epoch_id"), body.get("prev")
    if not (ids.is_hex(epoch_id, 32) and ids.is_hex(prev, 2 * SECRET_LEN)):
        return None
    return str(epoch_id), str(prev)


@dataclass(frozen=True, slots=True)
class Held:
    """One epoch whose secret this node holds."""

    n: int
    epoch_id: str  # "" for the root
    secret: str

    @property
    def key_id(self) -> str:
        """The key_id messages sealed under it carry."""
        return epoch_key_id(self.n, self.epoch_id)


@dataclass(frozen=True, slots=True)
class Keys:
    """A circle's held secrets, and the newest winner among them (what this node seals with)."""

    circle_id: str
    held: dict[str, Held]  # by key_id
    newest: Held | None  # None: nothing held (a circle left)
    chain: tuple[str, ...] = ()  # the epoch ids of the winning chain, 1..n
    # (channel id, channel part) -> what channel_keys holds: a typed key ("k"), a secret hex.
    parts: dict[tuple[str, str], str] = field(default_factory=dict)

    def secret_for(self, key: str, channel_id: str = "") -> str | None:
        """The secret of the epoch ``key`` names, if held; for a private channel's key id,
        the message secret of ``channel_id`` (the channel the message is in) under it."""
        if "/" not in key:
            found = self.held.get(key)
            return found.secret if found else None
        parsed = chan.parse_channel_key_id(key)
        if parsed is None:
            return None
        epoch, kept = self.held.get(parsed[0]), self.parts.get((channel_id, parsed[1]))
        if epoch is None or kept is None:
            return None
        if parsed[1] == chan.KEY_PART:
            return chan.key_channel_secret(kept, epoch.secret, self.circle_id, channel_id)
        return chan.invite_channel_secret(kept, epoch.secret, self.circle_id, channel_id)

    def channel_seal(self, channel: Channel) -> tuple[str, str] | None:
        """(key id, secret) a private channel's messages are sealed under now: its key (key
        channel) or its newest channel epoch (invite) under the newest circle epoch; None
        if this node does not hold it."""
        if self.newest is None:
            return None
        if channel.access_mode == "key":
            part = chan.KEY_PART
        elif channel.keys:
            part = chan.invite_part(channel.keys[-1].n, channel.keys[-1].epoch_id)
        else:
            return None
        key = chan.channel_key_id(self.newest.key_id, part)
        secret = self.secret_for(key, channel.channel_id)
        return (key, secret) if secret else None

    def opened_by(
        self, epochs: list[Held], parts: list[tuple[str, str]]
    ) -> list[tuple[str, str | None]]:
        """(key id, channel or None: any) of the rows that epochs and channel parts just
        gained may open: each epoch's own and its channels', each part under every epoch."""
        found: dict[tuple[str, str | None], None] = {}
        for h in epochs:
            found[h.key_id, None] = None
            for channel_id, part in self.parts:
                found[chan.channel_key_id(h.key_id, part), channel_id] = None
        for channel_id, part in parts:
            for h in self.held.values():
                found[chan.channel_key_id(h.key_id, part), channel_id] = None
        return list(found)

    @property
    def root(self) -> str | None:
        """The root secret, if held."""
        return self.secret_for(ROOT_KEY_ID)

    def plausible(self, key: str) -> bool:
        """Whether ``key`` may name an epoch not held yet: of our form and not too far ahead."""
        parsed = parse_key_id(chan.epoch_of_key_id(key))
        if "/" in key and chan.parse_channel_key_id(key) is None:
            return False
        top = max((h.n for h in self.held.values()), default=0)
        return parsed is not None and parsed[0] <= top + MAX_AHEAD

    def answered(self) -> list[Held]:
        """The epochs the circles answer lists: the newest winner first, then the winning
        chain back (so the second is the one before: relay succession proves with it), then
        any other held (losing branches), the root last."""
        on_chain = {e: i for i, e in enumerate(self.chain)}

        def rank(h: Held) -> tuple[bool, int, int, str]:
            return (h.n == 0, -on_chain.get(h.epoch_id, -1), -h.n, h.epoch_id)

        rest = sorted((h for h in self.held.values() if h != self.newest), key=rank)
        return ([self.newest] if self.newest else []) + rest[: MAX_ANSWERED - 1]


def root_of(circle_id: str, circle_secret: str) -> str:
    """``circles.secret`` if it is the root secret (it derives the circle id), else ""."""
    return circle_secret if circle_secret and ids.circle_id(circle_secret) == circle_id else ""


def keys_of(
    circle_id: str,
    circle_secret: str,
    rows: Sequence[tuple[str, int, str]],
    chain: Sequence[str],
    channel_rows: Sequence[tuple[str, str, str]] = (),
) -> Keys:
    """The Keys of a circle from ``circles.secret``, its ``epoch_keys`` rows (epoch_id, n,
    secret), the fold's winning chain (epoch ids of epochs 1..n) and its ``channel_keys``
    rows (channel_id, part, secret)."""
    held: dict[str, Held] = {}
    if root_of(circle_id, circle_secret):
        held[ROOT_KEY_ID] = Held(0, "", circle_secret)
    for epoch_id, n, secret in rows:
        h = Held(n, epoch_id, secret)
        held[h.key_id] = h
    by_id = {h.epoch_id: h for h in held.values()}
    newest = next((by_id[e] for e in reversed(chain) if e in by_id), None)
    if newest is None:
        newest = held.get(ROOT_KEY_ID)
    if newest is None and held:  # joined by an epoch's code, the chain not known yet
        newest = max(held.values(), key=lambda h: (h.n, h.epoch_id))
    parts = {(channel_id, part): secret for channel_id, part, secret in channel_rows}
    return Keys(circle_id, held, newest, tuple(chain), parts)

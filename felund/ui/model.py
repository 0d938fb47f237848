"""The ui's view model: what the screen shows, given the node's events and the user's keys.

Sans-IO: nothing here touches curses, the bus or the clock on its own. The
app (the ui process, ``services.ui``) feeds it events and keys and carries
out the effects it returns; ``felund.ui.render`` turns it into screen lines.

INTERFACE CONTRACT (shared by this module, felund.ui.render and services.ui; keep it):

Keys are strings: a typed character (or a pasted run of them) as itself,
else one of the names in ``KEYS``.

Effects returned by the model, carried out by the app:
- ``Call(token, op, body)``: a store RPC (``felund.protocol.OP_*``); the app
  answers with ``Model.on_reply(token, answer)`` or
  ``Model.on_error(token, code, text)`` (code ``"timeout"`` when the store
  did not answer in time; the app retries idempotent calls itself first).
- ``Quit()``: detach (the node keeps running).

Events fed to the model by the app; a bus event's handler is named after
its topic (``on_`` + the topic with dots as underscores), and takes its body:
- ``start() -> list[Effect]``: first call; asks for circles etc.
- ``on_chat_msg_stored(rows)``: ``chat.msg.stored`` rows (and catch-up rows),
  each a dict with store_seq, msg_id, circle_id, channel_id, author_node_id,
  display_name, created_ts, text, origin. Idempotent by msg_id.
- ``on_chat_circle_changed(body=None)``: ``chat.circle.changed`` was published.
- ``on_sys_svc_heartbeat(body)``: any service's heartbeat; gossip's gives the
  peer count (``peers``, else ``sessions``), the others and malformed bodies
  are ignored.
- ``on_sys_log(record)``: a ``sys.log`` record (dict with ts, service, level, event, ...).
- ``on_key(key)``: a key.
- ``on_resize(rows, cols)``.

ADDITIONS (this module's own; the contract above is unchanged):
- ``Model(node_id, clock=time.time, new_msg_id=ids.new_msg_id, node_quiet_s=3.0)``.
- ``on_tick()``: at every wake-up of the app (at least once a second): a
  store whose heartbeat has not come for ``node_quiet_s`` makes the node
  unreachable (``disconnected_since``); its next heartbeat says it is back.
  Gossip's heartbeat's ``connectivity`` gives ``gossip`` (circle_id ->
  (peers, last_message_ts or None)) for the header.
- Every event method (``start``, ``on_*``) returns ``list[Effect]``, maybe empty.
- ``dirty``: set by any change; the app may clear it after drawing.
- What the renderer reads: ``mode`` (``"loading"``, ``"wizard"``, ``"chat"``),
  ``wizard_step``, ``active`` ((circle_id, channel_id) or None),
  ``active_circle()``, ``active_channel()``, ``pane()`` (the ``Pane`` shown),
  ``sidebar()``, ``peers``, ``status``/``status_style``, ``prompt``,
  ``input`` (a ``felund.ui.input.LineEditor``), ``overlay`` (None, ``"help"``,
  ``"invite"``, ``"settings"``, ``"debug"``), ``overlay_scroll``,
  ``invite_code``, ``settings`` (display_name, relay_url), ``settings_field``,
  ``settings_editing``, ``debug_lines``, ``sidebar_rows(height)``; ``layout(rows,
  cols)`` (the sidebar as F4 left it; none under the invite window) places them.
- The parts, each importing only those below it (no cycle, type-only imports
  included): ``model`` (this: the view and what keys do) > ``keys`` (what
  each key does) > ``slash`` (what each slash command does) > ``view`` (the
  state, the store's answers and events, effects; ``render`` and the app's
  ``calls`` read it) > ``commands`` (the commands' table, parsing, control
  events, completion) and ``state`` (circles, channels, strict reading of rows
  and answers, the screen's layout) > ``pane`` (a channel's sorted messages,
  unread, mentions, day separators, scrolling) and ``input`` (the input line) >
  ``markdown`` (inline spans, mentions) > ``text`` (widths, wrapping); ``render``
  draws the invite's QR code with ``qr``.
- A line starting with ``//`` is sent as a message with one slash less.
- ``/circle switch <n|name>`` switches circle (n as ``/circles`` numbers them).
- ``/channel request <name>`` and ``/channel approve <name> <person>`` as the CLI's.
- ``/circle create [name]``, ``/circle name <new>``, ``/circle leave`` (asked twice),
  ``/inbox [--mentions|-m] [N]`` (one ``store.inbox`` per circle, merged here),
  ``/channel requests <name>``, ``/time`` (full dates and times), F4 (the sidebar).
- ``on_click(row, col)``: a mouse click (the wheel is the keys ``WHEEL_UP``/``WHEEL_DOWN``).
- ``Copy(text)``: an effect: put ``text`` on the terminal's clipboard (OSC 52).
- Detaching (Ctrl+Q, ``/quit``) while posts await the store's answer only
  warns; the same again within ``DETACH_CONFIRM_S`` detaches.
"""

from __future__ import annotations

from typing import Final

from felund.ui import keys as ui_keys
from felund.ui.view import DETACH_CONFIRM_S, Call, Copy, Effect, Quit, View

__all__ = ["DETACH_CONFIRM_S", "KEYS", "Call", "Copy", "Effect", "Model", "Quit"]

KEYS: Final = frozenset(
    {
        "ENTER",
        "BACKSPACE",
        "DELETE",
        "LEFT",
        "RIGHT",
        "HOME",
        "END",
        "UP",
        "DOWN",
        "PGUP",
        "PGDN",
        "TAB",
        "ESC",
        "F1",
        "F2",
        "F3",
        "F4",  # the sidebar, hidden or shown
        "WHEEL_UP",
        "WHEEL_DOWN",
        "C-q",
        "C-n",
        "C-p",
        "C-u",  # clear the input line
        "C-w",  # delete the word before the cursor
        *(f"M-{i}" for i in range(1, 10)),
    }
)


class Model(View):
    """The ui's view model: the view (``felund.ui.view``) and what keys do to it."""

    def on_key(self, key: str) -> list[Effect]:
        """A key or typed text."""
        if not isinstance(key, str) or not key:
            return []
        self.dirty = True
        effects = ui_keys.handle(self, key, KEYS)
        if key != "TAB":
            self.completion = None
        self._scroll_input()
        return effects

    def on_click(self, row: int, col: int) -> list[Effect]:
        """A mouse click at the screen's (row, col)."""
        self.dirty = True
        return ui_keys.click(self, row, col)

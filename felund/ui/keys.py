"""What each key does to the ui's view model: editing, moving between channels
and pages, the settings form, Tab completion, Enter (send, command, first-run
wizard) (sans-IO).

Functions of the view rather than its methods, so ``felund.ui.view`` keeps
to the store's side; they change the view through its public methods, and
``felund.ui.model.Model.on_key`` calls ``handle``.
"""

from __future__ import annotations

from collections.abc import Callable

from felund.errors import InvalidMessage, UsageError
from felund.protocol import (
    DEFAULT_CHANNEL,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_POST,
    OP_SETTINGS,
)
from felund.ui import commands as cmds
from felund.ui import slash
from felund.ui.pane import PENDING, Msg
from felund.ui.view import SETTINGS_FIELDS, Effect, View
from felund.v1.invite import INVITE_PREFIX
from felund.v1.wire import MAX_TEXT_BYTES, MAX_TEXT_CHARS, check_text

OVERLAY_KEYS = {"F1": "help", "F2": "invite", "F3": "settings"}
_HELP_SCROLL_MAX = 200  # lines; the help is shorter, the renderer stops at its end
WHEEL_LINES = 3  # lines one step of the mouse wheel scrolls
EDIT_KEYS = frozenset({"BACKSPACE", "DELETE", "LEFT", "RIGHT", "HOME", "END", "C-u", "C-w"})


def handle(model: View, key: str, named: frozenset[str]) -> list[Effect]:
    """Carry out one key (``named``: the key names; anything else is typed text)."""
    if key == "C-q":
        return model.detach()
    if key in OVERLAY_KEYS:
        return model.open(OVERLAY_KEYS[key])
    if key == "F4":
        model.sidebar_shown = not model.sidebar_shown
        return []
    if key in ("WHEEL_UP", "WHEEL_DOWN"):
        return scroll(model, WHEEL_LINES if key == "WHEEL_UP" else -WHEEL_LINES)
    if model.overlay == "settings":
        return _settings_key(model, key, named)
    if key == "ESC":
        return model.close()
    if key in ("C-n", "C-p"):
        return switch_by(model, 1 if key == "C-n" else -1)
    if key.startswith("M-") and key in named:
        return switch_nth(model, int(key[2:]))
    if key in ("UP", "DOWN"):
        model.input.history_prev() if key == "UP" else model.input.history_next()
        return []
    if key in ("PGUP", "PGDN"):
        return page(model, up=key == "PGUP")
    if key == "ENTER":
        return _submit(model)
    if key == "TAB":
        complete(model)
        return []
    if key == "END":
        model.input.end()
        return to_bottom(model)
    if key in EDIT_KEYS or key not in named:
        edit(model, key)
    return []


def edit(model: View, key: str) -> None:
    """An editing key, or typed text, applied to the input line."""
    editor = model.input
    actions: dict[str, Callable[[], None]] = {
        "BACKSPACE": editor.backspace,
        "DELETE": editor.delete,
        "LEFT": editor.left,
        "RIGHT": editor.right,
        "HOME": editor.home,
        "END": editor.end,
        "C-u": editor.kill_line,
        "C-w": editor.kill_word,
    }
    action = actions.get(key)
    if action is not None:
        action()
    else:
        editor.insert(key)


# --- moving around ------------------------------------------------------------------
def switch_by(model: View, step: int) -> list[Effect]:
    """The next (1) or previous (-1) channel in the sidebar's order, around."""
    order = [(c.circle_id, v.channel_id) for c, views in model.sidebar() for v in views]
    if not order:
        return []
    i = order.index(model.active) if model.active in order else -step
    return model.switch(*order[(i + step) % len(order)])


def switch_nth(model: View, n: int) -> list[Effect]:
    """The n-th channel (from 1) of the active circle."""
    circle = model.active_circle()
    joined = circle.joined() if circle else []
    if circle is None or not 0 < n <= len(joined):
        return []
    return model.switch(circle.circle_id, joined[n - 1].channel_id)


def page(model: View, up: bool) -> list[Effect]:
    """PageUp/PageDown: the pane (or the help and debug windows) by a page."""
    step = max(1, model.layout(model.rows, model.cols).body_height - 1)
    return scroll(model, step if up else -step)


def scroll(model: View, lines: int) -> list[Effect]:
    """The pane (or the help and debug windows) by ``lines``: up if positive."""
    lay = model.layout(model.rows, model.cols)
    up, step = lines > 0, abs(lines)
    if model.overlay in ("help", "debug"):
        # help reads from its top, the debug log from its newest line
        further = up == (model.overlay == "debug")
        limit = len(model.debug_lines) if model.overlay == "debug" else _HELP_SCROLL_MAX
        scroll = model.overlay_scroll + (step if further else -step)
        model.overlay_scroll = min(max(0, scroll), limit)
        return []
    pane = model.pane()
    if up:
        pane.scroll_up(step, lay.body_height, lay.pane_cols)
        return []
    pane.scroll_down(step, lay.pane_cols)
    return model.read_active()


def click(model: View, row: int, col: int) -> list[Effect]:
    """A click: on a channel of the sidebar, that channel; on a circle, its #general."""
    lay = model.layout(model.rows, model.cols)
    top = lay.body_top
    if not (0 <= col < lay.sidebar - 1 and top <= row < top + lay.body_height):
        return []
    rows = model.sidebar_rows(lay.body_height)
    if row - top >= len(rows):
        return []
    circle, view = rows[row - top]
    model.close()
    return model.switch(circle.circle_id, view.channel_id if view else DEFAULT_CHANNEL)


def to_bottom(model: View) -> list[Effect]:
    """Back to the newest message."""
    model.pane().to_bottom()
    return model.read_active()


# --- the settings form --------------------------------------------------------------
def _settings_key(model: View, key: str, named: frozenset[str]) -> list[Effect]:
    if not model.settings_editing:
        if key in ("UP", "DOWN"):
            step = 1 if key == "DOWN" else -1
            model.settings_field = (model.settings_field + step) % len(SETTINGS_FIELDS)
        elif key == "ENTER":
            model.settings_draft = model.input.text
            model.input.set(model.settings[SETTINGS_FIELDS[model.settings_field][0]])
            model.settings_editing = True
        elif key == "ESC":
            model.close()
        return []
    if key == "ESC":
        model.end_edit()
        return []
    if key == "ENTER":
        value = model.input.text.strip()
        name = SETTINGS_FIELDS[model.settings_field][0]
        model.end_edit()
        return guarded(model, lambda: _save_setting(model, name, value))
    if key in EDIT_KEYS or key not in named:
        edit(model, key)
    return []


def _save_setting(model: View, name: str, value: str) -> list[Effect]:
    if name == "display_name":
        return model.rename(value)
    return [model.call(OP_SETTINGS, {"relay_url": value}, "settings", extra="relay URL saved")]


# --- completion ----------------------------------------------------------------------
def complete(model: View) -> None:
    """Tab: complete the word before the cursor; Tab again: the next candidate."""
    editor = model.input
    if model.completion is not None:
        start, candidates, i = model.completion
        i = (i + 1) % len(candidates)
    else:
        start, candidates = cmds.completions(editor.text[: editor.cursor], context(model))
        if not candidates:
            return
        i = 0
    choice = candidates[i] + (" " if len(candidates) == 1 else "")
    editor.text = editor.text[:start] + choice + editor.text[editor.cursor :]
    editor.cursor = start + len(choice)
    model.completion = (start, candidates, i) if len(candidates) > 1 else None


def context(model: View) -> cmds.Context:
    """What completion may offer in the active circle."""
    circle = model.active_circle()
    if circle is None:
        return cmds.Context([], [], [c.name for c in model.circles.values() if c.name])
    channels = [c for c, v in circle.channels.items() if v.listed]
    people = [name for node, (_, name) in circle.names.items() if node != model.node_id]
    return cmds.Context(channels, people, [c.name for c in model.circles.values() if c.name])


# --- Enter ---------------------------------------------------------------------------
def _submit(model: View) -> list[Effect]:
    line = model.input.take()
    if model.overlay in ("help", "invite", "debug"):
        model.close()
    if model.mode == "wizard" and not line.startswith("/"):
        return guarded(model, lambda: _wizard(model, line.strip()))
    if line.startswith("/") and not line.startswith("//"):
        return guarded(model, lambda: slash.run(model, line))
    effects = to_bottom(model)
    return _send(model, line[1:] if line.startswith("//") else line) + effects


def guarded(model: View, action: Callable[[], list[Effect]]) -> list[Effect]:
    """Run an action; a usage error becomes a notice."""
    try:
        return action()
    except UsageError as exc:
        model.notice(str(exc), error=True)
        return []


def _send(model: View, text: str) -> list[Effect]:
    if not text.strip():
        return []
    channel, circle = model.active_channel(), model.active_circle()
    if channel is None or circle is None:
        model.notice("no channel to send to: create a circle, or /join <code>", error=True)
        return []
    try:
        check_text(text)
    except InvalidMessage:
        model.notice(
            f"too long to send: at most {MAX_TEXT_CHARS} characters "
            f"({MAX_TEXT_BYTES} bytes of UTF-8)",
            error=True,
        )
        return []
    ts = int(model.clock())
    msg_id = model.new_msg_id(model.node_id, ts)
    pending = Msg(msg_id, model.node_id, model.display_name, ts, text, state=PENDING)
    channel.pane.add(pending, model.node_id)
    body = {
        "circle_id": circle.circle_id,
        "channel_id": channel.channel_id,
        "msgs": [{"msg_id": msg_id, "created_ts": ts, "text": text}],
    }
    ctx = {"circle_id": circle.circle_id, "channel_id": channel.channel_id, "extra": msg_id}
    return [model.call(OP_POST, body, "post", **ctx)]


# --- the first-run wizard ---------------------------------------------------------------
def _wizard(model: View, text: str) -> list[Effect]:
    if model.wizard_step == "circle":
        if not text:
            raise UsageError("type a name for a new circle, or paste an invite code")
        if text.startswith(INVITE_PREFIX):
            model.wizard_choice = ("join", text)
        else:
            model.wizard_choice = ("create", cmds.check_display_name(text))
        model.wizard_step = "name"
        model.input.set(model.display_name)
        return []
    if model.wizard_step == "name":
        name = cmds.check_display_name(text)
        how, what = model.wizard_choice
        model.wizard_step = "working"
        if how == "join":
            return [model.call(OP_CIRCLE_JOIN, {"code": what}, "wizard", extra=name)]
        return [model.call(OP_CIRCLE_CREATE, {"name": what}, "wizard", extra=name)]
    return []

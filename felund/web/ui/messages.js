// The message pane: `HH:MM name: text` lines of the current channel, names
// coloured per person, unverified authors marked `?` (not signed by their key),
// pending sends marked, local notices after them. A divider ("Today",
// "Yesterday", a date) where the local day changes; http(s) URLs are links.
// Redrawn only when the view or its version changes; stays at the bottom
// if the reader was at the bottom (and never yanks them down otherwise).

import { el, hhmm, fullTime, dayKey, dayLabel, isHour12 } from "./dom.js";
import { TAIL_LINES, UNVERIFIED_MEANING } from "./state.js";

const NAME_COLOURS = 8;
const BOTTOM_SLACK_PX = 24;
// An http(s) URL up to a space, quote or angle bracket; the punctuation that usually ends a
// sentence after it is not part of it. No other scheme is ever a link (javascript:, data:…).
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?)\]}'"]+$/;

/** A link's href if `word` is a well-formed http(s) URL, else null. */
function httpHref(word) {
  try {
    const url = new URL(word);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * A message text as nodes: text, with each http(s) URL an <a> opening in a new tab
 * (rel=noopener noreferrer: the page it opens gets no handle on ours, nor our address).
 * Everything stays text (textContent): nothing in a message becomes markup.
 */
export function linkified(text) {
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    const url = match[0].replace(TRAILING, "");
    const href = httpHref(url);
    if (!href) continue;
    if (match.index > at) parts.push(text.slice(at, match.index));
    parts.push(el("a", { text: url, attrs: { href, target: "_blank", rel: "noopener noreferrer" } }));
    at = match.index + url.length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}

/** A stable colour class for a node id (same person, same colour, in every circle). */
export function colourClass(nodeId) {
  let h = 0;
  for (let i = 0; i < nodeId.length; i += 1) h = (h * 31 + nodeId.charCodeAt(i)) >>> 0;
  return `name-c${h % NAME_COLOURS}`;
}

export class MessagePane {
  constructor(root, state) {
    this.root = root;
    this.state = state;
    this.key = "";
    this.viewKey = "";
  }

  atBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight <= BOTTOM_SLACK_PX;
  }

  render() {
    const { state } = this;
    const view = state.view();
    const { circleId, channelId } = state.current;
    const viewKey = `${circleId}|${channelId}`;
    // The connection is in the key: a pending mark says "sending…" or "waiting for the relay".
    const online = state.connection() === "online";
    // The day is in the key too: "Today" becomes "Yesterday" at midnight; and the clock setting.
    const today = dayKey(Date.now() / 1000);
    const key = `${viewKey}|${view ? view.version : 0}|${state.noticeSeq}|${online}|${today}|${isHour12()}`;
    if (key === this.key) return;
    const newView = viewKey !== this.viewKey;
    const stick = newView || this.atBottom();
    this.key = key;
    this.viewKey = viewKey;

    const lines = [];
    if (view) {
      const me = state.identity ? state.identity.nodeId : "";
      const msgs = view.messages.filter((m) => m.channelId === channelId).slice(-TAIL_LINES); // the DOM stays small on a phone
      const now = Date.now() / 1000;
      let day = 0;
      for (const m of msgs) {
        if (dayKey(m.createdTs) !== day) {
          day = dayKey(m.createdTs);
          lines.push(el("div", { class: "day", attrs: { role: "separator" } }, [el("span", { text: dayLabel(m.createdTs, now) })]));
        }
        const pending = view.pending.has(m.msgId) ? (online ? "sending…" : "waiting for the relay") : "";
        lines.push(this.line(m, m.authorNodeId === me, pending));
      }
      if (!msgs.length) {
        lines.push(
          el("div", {
            class: "empty",
            text: `No messages in #${channelId} yet. Say hello, or press F2 to invite someone.`,
          }),
        );
      }
      if (view.peers === 0 && view.circle.invitedBy) {
        const relay = view.circle.relayUrl || location.origin;
        lines.push(
          el("div", {
            class: "empty unreachable",
            text:
              `Nobody else is at this relay yet, so nothing can arrive. The node that invited you ` +
              `(${view.circle.invitedBy}) must use this relay too: on it, run ` +
              `felund relay url ${relay}`,
          }),
        );
      }
    }
    for (const n of state.notices) {
      lines.push(
        el("div", { class: `notice notice-${n.level}` }, [
          el("time", { class: "ts", text: hhmm(n.ts) }),
          el("span", { class: "notice-text", text: n.text }),
        ]),
      );
    }
    this.root.replaceChildren(...lines);
    if (stick) this.root.scrollTop = this.root.scrollHeight;
  }

  /** One message line; `pending` is the text of its pending mark ("" once the relay has it). */
  line(m, mine, pending) {
    const name = m.displayName || m.authorNodeId.slice(0, 8);
    const classes = ["msg"];
    if (mine) classes.push("mine");
    if (pending) classes.push("pending");
    if (!m.verified) classes.push("unverified");
    return el("div", { class: classes.join(" "), attrs: { "data-msg-id": m.msgId } }, [
      el("time", { class: "ts", text: hhmm(m.createdTs), attrs: { title: fullTime(m.createdTs) } }),
      m.verified
        ? null
        : el("span", { class: "unverified-mark", text: "?", attrs: { title: UNVERIFIED_MEANING } }),
      el("span", {
        class: `name ${colourClass(m.authorNodeId)}`,
        text: name,
        attrs: { title: m.authorNodeId },
      }),
      el("span", { class: "sep", text: ": " }),
      el("span", { class: "text" }, linkified(m.text)),
      pending
        ? el("span", {
            class: "pending-mark",
            text: pending,
            attrs: { title: "not yet acknowledged by the relay; sent when it answers" },
          })
        : null,
    ]);
  }
}

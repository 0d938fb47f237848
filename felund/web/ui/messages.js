// The message pane: `HH:MM name: text` lines of the current channel, names
// coloured per person, unverified authors marked `?` (not signed by their key),
// pending sends marked, local notices after them.
// Redrawn only when the view or its version changes; stays at the bottom
// if the reader was at the bottom (and never yanks them down otherwise).

import { el, hhmm, fullTime } from "./dom.js";
import { UNVERIFIED_MEANING } from "./state.js";

// A long history is cut to its tail: the DOM stays small on a phone.
const MAX_LINES = 500;
const NAME_COLOURS = 8;
const BOTTOM_SLACK_PX = 24;

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
    const key = `${viewKey}|${view ? view.version : 0}|${state.noticeSeq}|${online}`;
    if (key === this.key) return;
    const newView = viewKey !== this.viewKey;
    const stick = newView || this.atBottom();
    this.key = key;
    this.viewKey = viewKey;

    const lines = [];
    if (view) {
      const me = state.identity ? state.identity.nodeId : "";
      const msgs = view.messages.filter((m) => m.channelId === channelId).slice(-MAX_LINES);
      for (const m of msgs) {
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
      el("span", { class: "text", text: m.text }),
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

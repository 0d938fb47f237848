// The sidebar: circles and their channels as buttons (so Tab and Enter reach
// them), unread counts as text ("3", with an aria-label), the current one
// marked with aria-current. Redrawn on every change; focus is put back on
// the same button so keyboard users do not lose their place.

import { el } from "./dom.js";

export class Sidebar {
  constructor(root, state, { onPick }) {
    this.root = root;
    this.state = state;
    this.onPick = onPick; // (circleId, channelId) => void
    this.key = "";
  }

  render() {
    const { state } = this;
    const parts = [];
    const items = [];
    for (const view of state.circles.values()) {
      const unread = state.unread(view);
      const channels = state.channels(view);
      let total = 0;
      for (const ch of channels) total += unread.get(ch) || 0;
      const name = state.circleName(view);
      const isCur = view.id === state.current.circleId;
      parts.push(view.id, name, total, isCur, state.current.channelId);
      const chItems = channels.map((ch) => {
        const n = unread.get(ch) || 0;
        parts.push(ch, n);
        const cur = isCur && ch === state.current.channelId;
        return el("li", {}, [
          this.button(`${view.id}/${ch}`, cur, "channel-btn", [
            el("span", { class: "chan-name", text: `#${ch}` }),
            badge(n),
          ], () => this.onPick(view.id, ch)),
        ]);
      });
      items.push(
        el("li", { class: isCur ? "circle current" : "circle" }, [
          this.button(view.id, false, "circle-btn", [
            el("span", { class: "circle-name", text: name }),
            badge(total),
          ], () => this.onPick(view.id, isCur ? state.current.channelId : "general")),
          el("ul", { class: "channels", attrs: { "aria-label": `channels of ${name}` } }, chItems),
        ]),
      );
    }
    const key = JSON.stringify(parts);
    if (key === this.key) return;
    this.key = key;
    const focused = document.activeElement;
    const focusKey = focused && this.root.contains(focused) ? focused.dataset.key : null;
    this.root.replaceChildren(
      el("h2", { class: "side-title", text: "Circles" }),
      el("ul", { class: "circles" }, items),
      el("p", { class: "side-hint", text: "/circle create NAME · /join CODE · /channel create NAME" }),
    );
    if (focusKey) {
      for (const b of this.root.querySelectorAll("button")) {
        if (b.dataset.key === focusKey) b.focus();
      }
    }
  }

  button(key, current, cls, children, onClick) {
    const b = el("button", { class: cls, attrs: { type: "button", "data-key": key } }, children);
    if (current) b.setAttribute("aria-current", "page");
    b.addEventListener("click", onClick);
    return b;
  }
}

function badge(n) {
  if (!n) return null;
  return el("span", {
    class: "unread",
    text: n > 99 ? "99+" : String(n),
    attrs: { "aria-label": `${n} unread` },
  });
}

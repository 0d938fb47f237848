// Desktop notifications of mentions: when the setting is on (F3), the browser
// allows them and this tab is hidden, a message of someone else naming us
// (@name) shows as a notification; a click brings the tab to its channel.

import { onScreen } from "./dom.js";

const SETTING = "notify";
const BODY_CHARS = 200;

/** Whether `text` mentions `name` as "@name" (any case), not as the start of a longer word. */
export function mentions(text, name) {
  if (!name) return false;
  const lower = text.toLowerCase();
  const word = `@${name.toLowerCase()}`;
  for (let at = lower.indexOf(word); at !== -1; at = lower.indexOf(word, at + 1)) {
    const next = lower.slice(at + word.length, at + word.length + 2);
    if (!/^[\p{L}\p{N}_]/u.test(next)) return true;
  }
  return false;
}

export class Notifier {
  constructor(state, store) {
    this.state = state;
    this.store = store;
    this.enabled = false;
    state.addEventListener("arrived", (e) => this.arrived(e.detail));
  }

  async load() {
    this.enabled = (await this.store.getSetting(SETTING)) === true;
  }

  /** Turn them on or off; on asks the browser's permission first (throws its refusal as a sentence). */
  async setEnabled(on) {
    if (on && !this.enabled) {
      if (typeof Notification === "undefined") throw new Error("This browser has no desktop notifications.");
      const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
      if (answer !== "granted") {
        throw new Error("The browser does not allow notifications for this page: allow them in its site settings first.");
      }
    }
    this.enabled = on;
    await this.store.putSetting(SETTING, on);
  }

  arrived({ view, msgs }) {
    if (!this.enabled || document.visibilityState !== "hidden") return;
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
    const me = this.state.identity;
    const listed = new Set(this.state.channels(view)); // not the control channel, nor one left
    for (const m of msgs) {
      if (!listed.has(m.channelId) || m.authorNodeId === me.nodeId || !mentions(m.text, me.displayName)) continue;
      const name = m.displayName || m.authorNodeId.slice(0, 8);
      const shown = new Notification(onScreen(`${name} in #${m.channelId} (${this.state.circleName(view)})`), {
        body: onScreen(m.text).slice(0, BODY_CHARS),
        tag: m.msgId,
      });
      shown.onclick = () => {
        window.focus();
        this.state.setCurrent(view.id, m.channelId);
        shown.close();
      };
    }
  }
}

// felund in a browser: a full felund peer that talks only to a relay.
// This file wires the pieces together: the store and state (ui/state.js),
// the setup screen, the chat screen (header, sidebar, messages, input) and
// the overlays, plus the global keys. Protocol work is lib/*.js's.

import { openStore } from "./lib/store.js";
import { normalizeRelayUrl } from "./lib/relay.js";
import { AppState, UserError } from "./ui/state.js";
import { byId, isNarrow, onNarrowChange, onScreen, setHour12 } from "./ui/dom.js";
import { Setup, defaultRelay, relayProblem } from "./ui/setup.js";
import { Sidebar } from "./ui/sidebar.js";
import { MessagePane } from "./ui/messages.js";
import { InputLine } from "./ui/input.js";
import { Overlays } from "./ui/overlays.js";
import { checkName, runLine } from "./ui/commands.js";
import { Calls, CallPanel } from "./ui/call.js";
import { parseIceText, iceText } from "./lib/callmesh.js";
import { Notifier } from "./ui/notify.js";
import { Favicon } from "./ui/favicon.js";

const SETTING_CLOCK = "clock"; // "12" or "24"

// What the header says for each connection state: words, not only a colour.
const CONNECTION_TEXT = {
  connecting: "connecting…",
  online: "online",
  offline: "offline: messages wait for the network",
  "relay-down": "relay down: retrying, messages wait",
  forbidden: "refused by the relay",
};

class App {
  constructor(state, store) {
    this.state = state;
    this.store = store;
    this.chat = byId("chat");
    this.input = byId("input");
    this.renderQueued = false;
    this.started = false;
    this.sidebarShown = !isNarrow();

    this.setup = new Setup(state, { onDone: () => this.enterChat() });
    this.sidebar = new Sidebar(byId("sidebar"), state, {
      onPick: (circleId, channelId) => this.pick(circleId, channelId),
    });
    this.pane = new MessagePane(byId("messages"), state);
    this.line = new InputLine(this.input, byId("composer"), {
      store,
      onLine: (line) => this.run(line),
      channels: () => (state.view() ? state.channels(state.view()) : []),
    });
    this.calls = new Calls(state, { onChange: () => this.queueRender() });
    this.callPanel = new CallPanel(this.calls, state, { focusInput: () => this.focusInput() });
    // A handle for the browser's console and the e2e tests (getStats of each connection).
    globalThis.felundCalls = this.calls;
    this.notifier = new Notifier(state, store);
    this.favicon = new Favicon(document.querySelector('link[rel="icon"]'));
    this.overlays = new Overlays(state, {
      focusInput: () => this.focusInput(),
      saveSettings: (s) => this.saveSettings(s),
      iceSetting: () => this.calls.iceSetting(),
      iceText,
      notifying: () => this.notifier.enabled,
    });

    byId("btn-help").addEventListener("click", () => this.overlays.showHelp());
    byId("btn-invite").addEventListener("click", () => this.overlays.showInvite());
    byId("btn-settings").addEventListener("click", () => this.overlays.showSettings());
    byId("sidebar-toggle").addEventListener("click", () => this.toggleSidebar());
    byId("btn-call").addEventListener("click", () => this.callPanel.toggle());
    // Shown beside the messages when there is room; turning narrow must not leave
    // the drawer open over them.
    onNarrowChange((narrow) => {
      this.sidebarShown = !narrow;
      this.applySidebar();
    });
    document.addEventListener("keydown", (e) => this.globalKey(e));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && state.current.circleId) {
        state.markRead(state.current.circleId, state.current.channelId);
        this.queueRender();
      }
    });
    state.addEventListener("change", () => this.queueRender());
  }

  // ---- screens -------------------------------------------------------

  async showSetup() {
    this.chat.hidden = true;
    await this.setup.show(this.relayGuess);
  }

  enterChat() {
    this.setup.hide();
    this.chat.hidden = false;
    if (!this.started) {
      this.started = true;
      this.state.startAll(); // circles joined in setup already run: startSync skips them
    }
    this.applySidebar();
    this.render();
    this.focusInput();
  }

  afterLeave(name) {
    if (!this.state.circles.size) {
      this.showSetup();
      return;
    }
    this.state.notice(`left ${name}; its secret is forgotten in this browser`);
  }

  // ---- rendering -----------------------------------------------------

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    // setTimeout, not requestAnimationFrame: rAF stops in background tabs,
    // and unread counts should be right when the tab comes back.
    setTimeout(() => {
      this.renderQueued = false;
      this.render();
    }, 0);
  }

  render() {
    if (this.chat.hidden) return;
    const { state } = this;
    const view = state.view();
    byId("hdr-circle").textContent = view ? onScreen(state.circleName(view)) : "no circle";
    byId("hdr-channel").textContent = view ? `#${state.current.channelId}` : "";
    const conn = state.connection();
    const connEl = byId("conn");
    connEl.dataset.state = conn;
    connEl.textContent = CONNECTION_TEXT[conn] || conn;
    const peers = view ? view.peers : null;
    byId("peers").textContent = peers === null ? "" : `${peers} peer${peers === 1 ? "" : "s"}`;
    this.sidebar.render();
    this.pane.render();
    this.calls.refresh();
    this.callPanel.render();
    let unread = 0;
    for (const v of state.circles.values()) {
      // Listed channels only, as the sidebar counts them: not one left.
      const counts = state.unread(v);
      for (const ch of state.channels(v)) unread += counts.get(ch) || 0;
    }
    document.title = unread ? `(${unread}) felund` : "felund";
    this.favicon.show(unread);
    if (!this.rendered) {
      this.rendered = true;
      performance.mark("felund:first-render"); // bench/web.py reads it
    }
  }

  // ---- actions -------------------------------------------------------

  async run(line) {
    try {
      await runLine(line, this);
    } catch (e) {
      if (e instanceof UserError) {
        this.state.notice(e.message, "error");
      } else {
        console.error(e);
        this.state.notice(`failed: ${e.message || e}`, "error");
      }
    }
  }

  async pick(circleId, channelId) {
    await this.state.setCurrent(circleId, channelId);
    if (isNarrow()) this.toggleSidebar(false);
    this.focusInput();
  }

  showHelp() {
    this.overlays.showHelp();
  }

  showInvite() {
    this.overlays.showInvite();
  }

  showSettings() {
    this.overlays.showSettings();
  }

  confirm(title, text, yes) {
    return this.overlays.confirm(title, text, yes);
  }

  async saveSettings({ name, relayUrl, iceFromRelay, ice, hour12, notify }) {
    const { state } = this;
    checkName(name, "display name"); // its UserError's message is shown in the dialog
    await this.notifier.setEnabled(notify);
    setHour12(hour12);
    await this.store.putSetting(SETTING_CLOCK, hour12 ? "12" : "24");
    state.changed();
    await this.calls.setIce({ fromRelay: iceFromRelay, servers: parseIceText(ice) });
    if (relayUrl) {
      let base;
      try {
        base = normalizeRelayUrl(relayUrl);
      } catch (e) {
        throw new Error(`That relay URL is not valid: ${e.message}`);
      }
      if (base !== state.relayUrl) {
        const problem = await relayProblem(base);
        if (problem) throw new Error(`${problem} Nothing was changed.`);
        await state.setRelayUrl(base);
        state.notice(`relay set to ${base}`);
      }
    }
    if (!state.identity || name !== state.identity.displayName) {
      if (state.circles.size) await state.rename(name);
      else await state.setIdentityName(name);
      state.notice(`you are now ${name}`);
    }
  }

  focusInput() {
    if (!this.chat.hidden) this.input.focus();
  }

  applySidebar() {
    this.chat.classList.toggle("side-shown", this.sidebarShown);
    byId("sidebar-toggle").setAttribute("aria-expanded", String(this.sidebarShown));
  }

  toggleSidebar(show = !this.sidebarShown) {
    this.sidebarShown = show;
    this.applySidebar();
    // On a phone the sidebar covers the messages: put focus in it, or back to the input.
    if (show && isNarrow()) {
      const cur = byId("sidebar").querySelector("[aria-current]") || byId("sidebar").querySelector("button");
      if (cur) cur.focus();
    } else if (!show) {
      this.focusInput();
    }
  }

  globalKey(e) {
    if (this.chat.hidden) return;
    const plain = !e.altKey && !e.ctrlKey && !e.metaKey;
    if (e.key === "F1" && plain) {
      e.preventDefault();
      this.overlays.showHelp();
    } else if (e.key === "F2" && plain) {
      e.preventDefault();
      this.overlays.showInvite();
    } else if (e.key === "F3" && plain) {
      e.preventDefault();
      this.overlays.showSettings();
    } else if (e.key === "F4" && plain) {
      e.preventDefault();
      this.callPanel.toggle();
    } else if (e.key === "F5" && plain) {
      e.preventDefault();
      this.toggleSidebar();
    } else if (e.key === "Escape") {
      // An open <dialog> closes itself on Escape (and its close handler refocuses).
      if (this.overlays.openDialog()) return;
      if (this.callPanel.shown && this.callPanel.root.contains(document.activeElement)) {
        this.callPanel.toggle(false);
        return;
      }
      if (isNarrow() && this.sidebarShown) this.toggleSidebar(false);
      this.focusInput();
    } else if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      e.preventDefault();
      this.state.stepChannel(e.key === "ArrowUp" ? -1 : 1);
    } else if ((e.key === "PageUp" || e.key === "PageDown") && document.activeElement === this.input) {
      e.preventDefault();
      const pane = byId("messages");
      pane.scrollBy({ top: (e.key === "PageUp" ? -0.9 : 0.9) * pane.clientHeight });
    }
  }
}

async function main() {
  performance.mark("felund:start"); // the modules are loaded: bench/web.py reads it
  // The shell from the cache when the network is gone (sw.js); none on plain http off localhost.
  navigator.serviceWorker?.register("sw.js").catch((e) => console.warn("felund: no offline shell:", e.message));
  // ?db=NAME keeps a second identity in the same browser profile apart.
  const dbName = new URLSearchParams(location.search).get("db") || "felund";
  const store = await openStore(dbName);
  setHour12((await store.getSetting(SETTING_CLOCK)) === "12");
  const state = new AppState(store);
  await state.load();
  const app = new App(state, store);
  await app.line.load();
  await app.calls.load();
  await app.notifier.load();
  app.relayGuess = state.relayUrl ? "" : await defaultRelay();
  byId("boot").hidden = true;
  if (state.ready) app.enterChat();
  else await app.showSetup();
  await state.loadRest();
}

main().catch((e) => {
  console.error(e);
  byId("boot").hidden = true;
  const fatal = byId("fatal");
  fatal.hidden = false;
  fatal.textContent =
    `felund could not start: ${e.message || e}. ` +
    "(Private windows of some browsers have no IndexedDB.)";
});

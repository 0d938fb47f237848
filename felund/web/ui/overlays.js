// The overlays: F1 help, F2 invite code (with a QR code), F3 settings.
// Native <dialog>s opened with showModal(): the browser traps focus inside
// and closes on Escape; on close the input gets focus back.

import { el, byId, onScreen } from "./dom.js";
import { COMMANDS, KEYS } from "./commands.js";
import { UNVERIFIED_MEANING } from "./state.js";
import { drawQr } from "./qr.js";

export class Overlays {
  constructor(state, { focusInput, saveSettings }) {
    this.state = state;
    this.focusInput = focusInput;
    this.saveSettings = saveSettings; // ({name, relayUrl}) => Promise<void>; throws with a message
    this.help = byId("dlg-help");
    this.invite = byId("dlg-invite");
    this.settings = byId("dlg-settings");
    for (const dlg of [this.help, this.invite, this.settings]) {
      dlg.addEventListener("close", () => this.focusInput());
      for (const b of dlg.querySelectorAll("[data-close]")) {
        b.addEventListener("click", () => dlg.close());
      }
    }
    this.fillHelp();
    byId("invite-copy").addEventListener("click", () => this.copyInvite());
    byId("settings-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submitSettings();
    });
  }

  openDialog() {
    return [this.help, this.invite, this.settings].find((d) => d.open) || null;
  }

  closeAll() {
    const open = this.openDialog();
    if (open) open.close();
    return Boolean(open);
  }

  show(dlg) {
    const open = this.openDialog();
    if (open === dlg) return;
    if (open) open.close();
    dlg.showModal();
  }

  fillHelp() {
    const rows = (pairs) =>
      pairs.map(([k, v]) =>
        el("tr", {}, [el("th", { text: k, attrs: { scope: "row" } }), el("td", { text: v })]),
      );
    byId("help-commands").replaceChildren(...rows(COMMANDS));
    byId("help-keys").replaceChildren(...rows(KEYS));
    byId("help-marks").textContent = UNVERIFIED_MEANING;
  }

  showHelp() {
    this.show(this.help);
    byId("help-close").focus();
  }

  showInvite() {
    const view = this.state.view();
    const code = view ? this.state.inviteCode(view) : "";
    byId("invite-title").textContent = view
      ? `Invite to ${onScreen(this.state.circleName(view))}`
      : "No circle yet";
    byId("invite-code").textContent = code || "Create or join a circle first (/circle create NAME).";
    byId("invite-peer").textContent = view ? `Members meet at the relay ${view.circle.relayUrl}.` : "";
    byId("invite-copied").textContent = "";
    const canvas = byId("invite-qr");
    canvas.hidden = !code;
    if (code) {
      const n = drawQr(canvas, code);
      canvas.setAttribute("aria-label", `QR code of the invite code (${n}×${n} modules)`);
    }
    byId("invite-copy").disabled = !code;
    this.show(this.invite);
    byId("invite-copy").focus();
  }

  async copyInvite() {
    const code = byId("invite-code").textContent;
    const status = byId("invite-copied");
    try {
      await navigator.clipboard.writeText(code);
      status.textContent = "Copied.";
    } catch {
      // No clipboard outside a secure context (plain http on a LAN): select it instead.
      const range = document.createRange();
      range.selectNodeContents(byId("invite-code"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = "Selected: copy it with Ctrl+C (or long-press on a phone).";
    }
  }

  showSettings() {
    byId("settings-name").value = this.state.identity ? this.state.identity.displayName : "";
    byId("settings-relay").value = this.state.relayUrl;
    byId("settings-error").textContent = "";
    this.show(this.settings);
    byId("settings-name").focus();
  }

  async submitSettings() {
    const error = byId("settings-error");
    error.textContent = "";
    const save = byId("settings-save");
    save.disabled = true;
    try {
      await this.saveSettings({
        name: byId("settings-name").value.trim(),
        relayUrl: byId("settings-relay").value.trim(),
      });
      this.settings.close();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      save.disabled = false;
    }
  }
}

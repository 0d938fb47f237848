// The overlays: F1 help, F2 invite code (with a QR code), F3 settings, and the
// question a command asks before it does what cannot be undone (/kick).
// Native <dialog>s opened with showModal(): the browser traps focus inside
// and closes on Escape; on close the input gets focus back.

import { el, byId, isHour12, onScreen } from "./dom.js";
import { COMMANDS, KEYS } from "./commands.js";
import { UNVERIFIED_MEANING } from "./state.js";
import { drawQr } from "./qr.js";
import { relayProblem } from "./setup.js";
import { normalizeRelayUrl } from "../lib/relay.js";

export class Overlays {
  constructor(state, { focusInput, saveSettings, iceSetting, iceText, notifying }) {
    this.notifying = notifying; // () => boolean: the notification setting now
    this.iceSetting = iceSetting; // () => Promise<{fromRelay, servers}>
    this.iceText = iceText;
    this.state = state;
    this.focusInput = focusInput;
    this.saveSettings = saveSettings; // ({name, relayUrl}) => Promise<void>; throws with a message
    this.help = byId("dlg-help");
    this.invite = byId("dlg-invite");
    this.settings = byId("dlg-settings");
    this.confirmDlg = byId("dlg-confirm");
    this.dialogs = [this.help, this.invite, this.settings, this.confirmDlg];
    for (const dlg of this.dialogs) {
      dlg.addEventListener("close", () => this.focusInput());
      for (const b of dlg.querySelectorAll("[data-close]")) {
        b.addEventListener("click", () => dlg.close());
      }
    }
    this.fillHelp();
    byId("invite-copy").addEventListener("click", () => this.copyInvite());
    byId("settings-relay-test").addEventListener("click", () => this.testRelay());
    byId("settings-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submitSettings();
    });
  }

  openDialog() {
    return this.dialogs.find((d) => d.open) || null;
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

  /**
   * Ask before doing what cannot be undone: resolves true for the yes button,
   * false for Cancel or Escape. Cancel has the focus: Enter alone answers no.
   * @param {string} title
   * @param {string} text
   * @param {string} yes the yes button's words (what it does)
   * @returns {Promise<boolean>}
   */
  confirm(title, text, yes) {
    byId("confirm-title").textContent = title;
    byId("confirm-text").textContent = text;
    const button = byId("confirm-yes");
    button.textContent = yes;
    return new Promise((resolve) => {
      let answer = false;
      const onYes = () => {
        answer = true;
        this.confirmDlg.close();
      };
      button.addEventListener("click", onYes, { once: true });
      this.confirmDlg.addEventListener(
        "close",
        () => {
          button.removeEventListener("click", onYes);
          resolve(answer);
        },
        { once: true },
      );
      this.show(this.confirmDlg);
      byId("confirm-no").focus();
    });
  }

  async showSettings() {
    byId("settings-name").value = this.state.identity ? this.state.identity.displayName : "";
    byId("settings-relay").value = this.state.relayUrl;
    byId("settings-relay-result").textContent = "";
    byId("settings-clock12").checked = isHour12();
    byId("settings-notify").checked = this.notifying();

    byId("settings-error").textContent = "";
    this.show(this.settings);
    byId("settings-name").focus();
    // After showing: the dialog opens at once, the stored ICE setting fills in as it comes.
    const ice = await this.iceSetting();
    byId("settings-ice-relay").checked = ice.fromRelay;
    byId("settings-ice").value = this.iceText(ice.servers);
  }

  /** The "Test relay" button: whether the URL in the field answers as a felund relay, and how fast. */
  async testRelay() {
    const result = byId("settings-relay-result");
    const button = byId("settings-relay-test");
    let base;
    try {
      base = normalizeRelayUrl(byId("settings-relay").value.trim() || this.state.relayUrl);
    } catch (e) {
      result.textContent = `That relay URL is not valid: ${e.message}`;
      return;
    }
    result.textContent = `Asking ${base}…`;
    button.disabled = true;
    try {
      const started = performance.now();
      const problem = await relayProblem(base);
      const ms = Math.round(performance.now() - started);
      result.textContent = problem || `The relay at ${base} answers (${ms} ms).`;
    } finally {
      button.disabled = false;
    }
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
        iceFromRelay: byId("settings-ice-relay").checked,
        ice: byId("settings-ice").value,
        hour12: byId("settings-clock12").checked,
        notify: byId("settings-notify").checked,
      });
      this.settings.close();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      save.disabled = false;
    }
  }
}

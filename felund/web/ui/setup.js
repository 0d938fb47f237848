// The setup screen: display name, relay URL, then create a circle or paste
// an invite code. Shown when the browser has no circle yet (first visit, or
// after leaving the last one). Every failure is a sentence in #setup-error.

import { byId } from "./dom.js";
import { UserError } from "./state.js";
import { checkName } from "./commands.js";
import { InviteError, decodeInvite, isUrlPeer } from "../lib/invite.js";
import { RelayError, normalizeRelayUrl, probeRelay } from "../lib/relay.js";

/** The message with a capital first letter (command errors are lowercase fragments). */
const sentence = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/**
 * Why the relay at base cannot be used, as a sentence; "" when it answers
 * /v1/health (lib/relay.js probeRelay: unsigned, it names no circle).
 * @returns {Promise<string>}
 */
export async function relayProblem(base) {
  try {
    await probeRelay(base);
    return "";
  } catch (e) {
    if (!navigator.onLine) return "You are offline: connect to a network and try again.";
    // Something answers there, but not a relay: most likely a wrong URL or path.
    if (e instanceof RelayError) {
      return `${base} answers, but it is not a felund relay (HTTP ${e.status}): check the URL.`;
    }
    return `The relay at ${base} does not answer (relay down, or a wrong URL). Try again later.`;
  }
}

/** The page's own origin, when it is a relay (the usual case: `felund relay serve` serves us). */
export async function defaultRelay() {
  if (!/^https?:$/.test(location.protocol)) return "";
  // Served from a sub-path (e.g. behind nginx at /felund/): try that path first.
  const path = location.pathname.replace(/\/[^/]*$/, "");
  const candidates = path ? [location.origin + path, location.origin] : [location.origin];
  for (const base of candidates) {
    if (!(await relayProblem(base))) return base;
  }
  return "";
}

export class Setup {
  constructor(state, { onDone }) {
    this.state = state;
    this.onDone = onDone;
    this.root = byId("setup");
    byId("setup-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const join = e.submitter ? e.submitter.id === "setup-join" : false;
      this.submit(join);
    });
    // Enter in the invite code box joins (a textarea would add a newline).
    byId("setup-code").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this.submit(true);
      }
    });
  }

  async show(relayGuess) {
    byId("setup-name").value = this.state.identity ? this.state.identity.displayName : "";
    byId("setup-relay").value = this.state.relayUrl || relayGuess || "";
    byId("setup-relay-hint").textContent =
      this.state.relayUrl || relayGuess
        ? "This page's relay. Change it only to use another one."
        : "This page is not served by a relay: give the address of one (where /v1/health answers).";
    this.error("");
    this.root.hidden = false;
    byId(byId("setup-name").value ? "setup-circle" : "setup-name").focus();
  }

  hide() {
    this.root.hidden = true;
  }

  error(text) {
    byId("setup-error").textContent = text;
  }

  busy(on) {
    for (const id of ["setup-create", "setup-join"]) byId(id).disabled = on;
    byId("setup-status").textContent = on ? "Working…" : "";
  }

  async submit(join) {
    if (byId("setup-create").disabled) return;
    this.error("");
    const name = byId("setup-name").value.trim();
    const code = byId("setup-code").value.trim();
    let relay = byId("setup-relay").value.trim();
    if (!name) return this.fail("Give a display name: it is what the others see.", "setup-name");
    const circleName = byId("setup-circle").value.trim();
    try {
      checkName(name, "display name");
    } catch (e) {
      return this.fail(`${sentence(e.message)}.`, "setup-name");
    }
    if (!join && circleName) {
      try {
        checkName(circleName, "circle name");
      } catch (e) {
        return this.fail(`${sentence(e.message)}.`, "setup-circle");
      }
    }
    let invitePeer = "";
    if (join) {
      if (!code) return this.fail("Paste an invite code (it starts with felund1.).", "setup-code");
      try {
        invitePeer = decodeInvite(code).peer;
      } catch (e) {
        if (e instanceof InviteError) {
          return this.fail(`That invite code is not valid: ${e.message}`, "setup-code");
        }
        throw e;
      }
      // A browser's invite names its relay: no relay of our own is needed then.
      if (!relay && isUrlPeer(invitePeer)) relay = invitePeer;
    }
    if (!relay) {
      return this.fail("Give a relay URL (the address where /v1/health answers).", "setup-relay");
    }
    let base;
    try {
      base = normalizeRelayUrl(relay);
    } catch (e) {
      return this.fail(`That relay URL is not valid: ${e.message}`, "setup-relay");
    }
    this.busy(true);
    try {
      const probe = join && isUrlPeer(invitePeer) ? normalizeRelayUrl(invitePeer) : base;
      const problem = await relayProblem(probe);
      if (problem) return this.fail(problem, join ? "setup-code" : "setup-relay");
      await this.state.setIdentityName(name);
      if (base !== this.state.relayUrl) await this.state.setRelayUrl(base);
      if (join) await this.state.joinCircle(code);
      else await this.state.createCircle(circleName);
      byId("setup-code").value = "";
      this.onDone();
    } catch (e) {
      if (e instanceof UserError || e instanceof InviteError) {
        this.fail(sentence(e.message));
      } else {
        this.fail(`Something went wrong: ${e.message || e}`);
        console.error(e);
      }
    } finally {
      this.busy(false);
    }
  }

  fail(text, focusId) {
    this.error(text);
    if (focusId) byId(focusId).focus();
  }
}

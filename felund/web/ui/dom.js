// Small DOM helpers. Every piece of data reaches the page through
// textContent or setAttribute, never innerHTML: a message or a display name
// that contains HTML must show as text (and the CSP forbids inline script
// and style anyway).

/**
 * Make an element.
 * @param {string} tag
 * @param {{class?: string, text?: string, attrs?: Record<string, string>}} [opts]
 * @param {(Node|string|null|undefined|false)[]} [children]
 */
// Bidirectional formatting characters: an override (U+202E) in a name or message
// would show it reversed. Every screen drops them, as felund.protocol.on_screen does.
const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/g;

/** Text as the page shows it: without bidirectional formatting characters. */
export function onScreen(text) {
  return String(text).replace(BIDI_CONTROLS, "");
}

export function el(tag, opts = {}, children = []) {
  const node = document.createElement(tag);
  if (opts.class) node.className = opts.class;
  if (opts.text !== undefined) node.textContent = onScreen(opts.text);
  for (const [k, v] of Object.entries(opts.attrs || {})) node.setAttribute(k, v);
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(onScreen(child)) : child);
  }
  return node;
}

/** The element with this id; throws early if index.html and the code disagree. */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`index.html has no #${id}`);
  return node;
}

/** HH:MM of a Unix time in seconds, local time (as the terminal client shows it). */
export function hhmm(ts) {
  const d = new Date(ts * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** The full local date and time, for a title attribute. */
export function fullTime(ts) {
  return new Date(ts * 1000).toLocaleString();
}

const NARROW = window.matchMedia("(max-width: 720px)");

/** True on a phone-sized screen, where the sidebar is a drawer over the messages. */
export function isNarrow() {
  return NARROW.matches;
}

/** Call ``fn(narrow)`` whenever the screen turns phone-sized or back (a rotation, a resize). */
export function onNarrowChange(fn) {
  NARROW.addEventListener("change", (e) => fn(e.matches));
}

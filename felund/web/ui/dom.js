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

// The clock every time on the page uses: 24-hour (the default, as the terminal
// client) or 12-hour, chosen in F3 (the store's "clock" setting, read at boot).
let hour12 = false;

/** Use the 12-hour clock (true) or the 24-hour one (false) from now on. */
export function setHour12(value) {
  hour12 = Boolean(value);
}

/** Whether times show on the 12-hour clock. */
export function isHour12() {
  return hour12;
}

const pad = (n) => String(n).padStart(2, "0");

/** The time of day of a Unix time in seconds, local time: "14:05", or "2:05 PM" on the 12-hour clock. */
export function hhmm(ts) {
  const d = new Date(ts * 1000);
  if (!hour12) return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const h = d.getHours() % 12 || 12;
  return `${h}:${pad(d.getMinutes())} ${d.getHours() < 12 ? "AM" : "PM"}`;
}

/** The local date and time, "2026-12-07 14:05" (or "… 2:05 PM"): /who and title attributes. */
export function fullTime(ts) {
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hhmm(ts)}`;
}

/** The local calendar day of a Unix time, as a comparable key. */
export function dayKey(ts) {
  const d = new Date(ts * 1000);
  return d.getFullYear() * 10000 + (d.getMonth() + 1) * 100 + d.getDate();
}

/** A day divider's words: "Today", "Yesterday", else "Tuesday 1 December" (and the year if not this one). */
export function dayLabel(ts, now = Date.now() / 1000) {
  const key = dayKey(ts);
  if (key === dayKey(now)) return "Today";
  const yesterday = new Date(now * 1000);
  yesterday.setDate(yesterday.getDate() - 1);
  if (key === dayKey(yesterday.getTime() / 1000)) return "Yesterday";
  const d = new Date(ts * 1000);
  const weekday = d.toLocaleDateString("en-GB", { weekday: "long" });
  const month = d.toLocaleDateString("en-GB", { month: "long" });
  const year = d.getFullYear() === new Date(now * 1000).getFullYear() ? "" : ` ${d.getFullYear()}`;
  return `${weekday} ${d.getDate()} ${month}${year}`;
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

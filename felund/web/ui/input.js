// The input line: Enter sends (or runs a command), Shift+Enter starts a new
// line (the box grows with its lines up to style.css's max-height, then scrolls), Up/Down
// on the first/last line walk the
// history (kept in the store, so a reload keeps it), Tab completes command
// words and channel names. Tab with nothing to complete is left alone, so
// keyboard users can still Tab out of the input to the other controls.

import { COMMAND_WORDS, SUBCOMMANDS } from "./commands.js";

const HISTORY_SETTING = "history";
const MAX_HISTORY = 100;

function commonPrefix(words) {
  let p = words[0] || "";
  for (const w of words) while (!w.startsWith(p)) p = p.slice(0, -1);
  return p;
}

export class InputLine {
  /**
   * @param {HTMLTextAreaElement} input
   * @param {{store: any, onLine: (line: string) => Promise<void>, channels: () => string[]}} deps
   */
  constructor(input, form, { store, onLine, channels }) {
    this.input = input;
    this.store = store;
    this.onLine = onLine;
    this.channels = channels;
    this.history = [];
    this.at = 0; // index into history; history.length = the draft being typed
    this.draft = "";
    this.cycle = null; // {before, words, i} while Tab cycles through several matches
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    input.addEventListener("keydown", (e) => this.key(e));
    input.addEventListener("input", () => this.fit());
  }

  /** Grow or shrink the box to its lines; style.css's max-height stops it (CSSOM, not a style attribute). */
  fit() {
    const box = this.input;
    box.style.height = "auto";
    const borders = box.offsetHeight - box.clientHeight;
    box.style.height = `${box.scrollHeight + borders}px`;
  }

  async load() {
    const saved = await this.store.getSetting(HISTORY_SETTING);
    this.history = Array.isArray(saved) ? saved.slice(-MAX_HISTORY) : [];
    this.at = this.history.length;
  }

  async submit() {
    const line = this.input.value;
    if (!line.trim()) return;
    this.set("");
    this.cycle = null;
    // A channel key stays out of the stored history (only its hash is ever sent).
    const hasKey = /^\/channel\s+join\s+\S+\s+\S/.test(line.trim());
    if (!hasKey && this.history[this.history.length - 1] !== line) {
      this.history.push(line);
      if (this.history.length > MAX_HISTORY) this.history.shift();
      // Best effort: losing the history is not worth an error on screen.
      this.store.putSetting(HISTORY_SETTING, this.history).catch(() => {});
    }
    this.at = this.history.length;
    this.draft = "";
    await this.onLine(line);
  }

  key(e) {
    if (e.key !== "Tab") this.cycle = null;
    if (e.altKey || e.ctrlKey || e.metaKey || e.isComposing) return;
    const { value, selectionStart, selectionEnd } = this.input;
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      this.submit();
    } else if (e.key === "ArrowUp") {
      // Within a message of several lines the arrows move the cursor; history from the first line.
      if (this.at === 0 || value.lastIndexOf("\n", selectionStart - 1) !== -1) return;
      if (this.at === this.history.length) this.draft = this.input.value;
      this.at -= 1;
      this.set(this.history[this.at]);
      e.preventDefault();
    } else if (e.key === "ArrowDown") {
      if (this.at >= this.history.length || value.indexOf("\n", selectionEnd) !== -1) return;
      this.at += 1;
      this.set(this.at === this.history.length ? this.draft : this.history[this.at]);
      e.preventDefault();
    } else if (e.key === "Tab" && !e.shiftKey) {
      if (this.complete()) e.preventDefault();
    }
  }

  set(value) {
    this.input.value = value;
    this.input.setSelectionRange(value.length, value.length);
    this.fit();
  }

  /** Candidates for the last word of `text`: [text before the word, matching words]. */
  candidates(text) {
    const parts = text.split(" ");
    const word = parts[parts.length - 1];
    const before = text.slice(0, text.length - word.length);
    let pool = [];
    if (parts.length === 1 && word.startsWith("/")) pool = COMMAND_WORDS;
    else if (parts.length === 2 && SUBCOMMANDS[parts[0]]) pool = SUBCOMMANDS[parts[0]];
    else if (parts.length === 3 && parts[0] === "/channel" && ["switch", "leave"].includes(parts[1])) {
      pool = this.channels();
    } else if (word.startsWith("#")) pool = this.channels().map((c) => `#${c}`);
    return [before, pool.filter((w) => w.startsWith(word))];
  }

  /** Complete the word before the cursor; whether anything was done. */
  complete() {
    const text = this.input.value;
    if (this.input.selectionStart !== text.length) return false;
    if (this.cycle) {
      const c = this.cycle;
      c.i = (c.i + 1) % c.words.length;
      this.set(c.before + c.words[c.i]);
      return true;
    }
    const [before, words] = this.candidates(text);
    if (!words.length) return false;
    if (words.length === 1) {
      this.set(`${before}${words[0]} `);
      return true;
    }
    const prefix = commonPrefix(words);
    if (before + prefix !== text) {
      this.set(before + prefix);
    } else {
      this.cycle = { before, words, i: 0 };
      this.set(before + words[0]);
    }
    return true;
  }
}

"""The browser page's benchmark: its first render of a 10k-message channel from IndexedDB.

A real relay serves the page to Debian's headless Chromium (Playwright, as
the e2e tests drive it). The page creates a circle, then 10,000 messages of
#general (80 to 200 characters, one in ten with a link, over ten days: the
day dividers too, each row with a wire of the size a signed message has) are
put into its IndexedDB through the page's own store. Each run reloads the
page and reads the ``felund:first-render`` mark that ``app.js`` sets on the
first render of the chat screen: the time from navigation start to the
messages on screen (the modules loaded, the store opened, history loaded,
channels derived, the pane drawn); ``felund:start`` (main() begins) splits
off the modules' loading. The first render reads only what it shows (the control
events and the channel's newest 500); the rest of the history is read
after it (``felund:history-loaded``), reported in the notes.

``python -m bench.web`` runs it alone and prints its row.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench import Row, print_table
from felund.testing import Relay, browser, browser_missing

MESSAGES = 10_000
RUNS = 30
T = 60_000  # ms: the bound of each wait on the page

FILL = """async (n) => {
  const { openStore } = await import("/lib/store.js");
  const store = await openStore("felund");
  const [circle] = await store.circles();
  const now = Math.floor(Date.now() / 1000);
  const authors = ["a1".repeat(12), "b2".repeat(12), "c3".repeat(12)];
  const words = "the quick brown fox jumps over a lazy dog while felund keeps circles small"
    .split(" ");
  const batch = [];
  for (let i = 0; i < n; i += 1) {
    let text = "";
    while (text.length < 80 + (i % 120)) text += words[(i * 7 + text.length) % words.length] + " ";
    if (i % 10 === 0) text += "https://example.org/page/" + i;
    batch.push({
      msgId: i.toString(16).padStart(32, "0"),
      channelId: "general",
      authorNodeId: authors[i % 3],
      displayName: ["ann", "bob", "cy"][i % 3],
      createdTs: now - Math.floor(((n - i) * 10 * 86400) / n),
      text,
      verified: true,
      signer: null,
      wire: { enc: "x".repeat(700) }, // a signed message's wire is about this size
    });
  }
  for (let i = 0; i < n; i += 1000) {
    await store.putMessages(circle.circleId, batch.slice(i, i + 1000));
  }
  return (await store.messages(circle.circleId)).length;
}"""

FIRST_RENDER = """() => {
  const [mark] = performance.getEntriesByName("felund:first-render");
  return mark ? mark.startTime : null;
}"""
HISTORY_LOADED = FIRST_RENDER.replace("felund:first-render", "felund:history-loaded")
STARTED = FIRST_RENDER.replace("felund:first-render", "felund:start")


def bench_page_first_render(directory: Path) -> Row:
    """The page's first render of a channel of MESSAGES from IndexedDB, p50/p99 over RUNS loads."""
    relay = Relay(directory / "relay")
    relay.start()
    try:
        with browser() as chromium:
            context = chromium.new_context()
            context.set_default_timeout(T)
            page = context.new_page()
            page.goto(relay.url + "/")
            page.wait_for_selector("#setup", state="visible")
            page.fill("#setup-name", "bench")
            page.fill("#setup-circle", "bench")
            page.click("#setup-create")
            page.wait_for_selector("#chat", state="visible")
            stored = page.evaluate(FILL, MESSAGES)
            assert stored >= MESSAGES, stored
            times, whole, app = [], [], []
            for _ in range(RUNS):
                page.reload()
                page.wait_for_function(FIRST_RENDER)
                assert page.locator("#messages .msg").count() > 0
                times.append(float(page.evaluate(FIRST_RENDER)))
                app.append(times[-1] - float(page.evaluate(STARTED)))
                page.wait_for_function(HISTORY_LOADED)
                whole.append(float(page.evaluate(HISTORY_LOADED)))
                # Idle before the next load, as a page is: its sync started and went online.
                page.wait_for_selector('#conn[data-state="online"]')
            lines = page.locator("#messages .msg").count()
            context.close()
    finally:
        relay.stop()
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return (
        f"page first render, {MESSAGES // 1000}k messages in IndexedDB (Chromium)",
        f"p50 {statistics.median(times):.0f} ms, p99 {p99:.0f} ms",
        f"navigation start to the chat screen drawn ({lines} newest lines); {RUNS} reloads; "
        f"target < 500 ms; of which the app's own part (modules loaded to drawn: store "
        f"opened, tail read, drawn) p50 {statistics.median(app):.0f} ms; the whole history "
        f"(unread counts) absorbed after it: p50 {statistics.median(whole):.0f} ms",
    )


def main() -> list[Row]:
    """The page's rows of the benchmark table (none without a browser: says why)."""
    problem = browser_missing()
    if problem is not None:
        return [("page first render (Chromium)", "skipped", problem)]
    with tempfile.TemporaryDirectory(prefix="felund-bench-") as tmp:
        return [bench_page_first_render(Path(tmp))]


if __name__ == "__main__":
    print_table(main())

// The offline shell: this worker keeps the app's files (index.html, the CSS,
// every module app.js imports, directly or not) in a cache, and serves them
// from it when the network fails, so the page opens with no network and shows
// what IndexedDB holds. Online, the network answers first (the relay sends
// no-cache: an upgraded relay serves the upgraded app at once) and the cache
// is refreshed from it. The API (/v1/...) never goes through the cache.

const CACHE = "felund-shell";
const ENTRY = ["./", "index.html", "style.css", "favicon.svg", "manifest.webmanifest", "app.js"];
// Static imports and import("…") of relative modules: how the shell's modules are found.
const IMPORTS = /(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"'\s]+)["']/g;
const MAX_FILES = 200; // the crawl is bounded, whatever the files say
const NETWORK_MS = 4000; // a network that does not answer is as good as none

/** Every file of the shell: the entry files and, from app.js on, each module imported. */
async function shellFiles(cache) {
  const seen = new Set(ENTRY.map((p) => new URL(p, self.registration.scope).href));
  const queue = [...seen].filter((u) => u.endsWith(".js"));
  await cache.addAll([...seen]);
  while (queue.length && seen.size < MAX_FILES) {
    const url = queue.shift();
    const response = await cache.match(url);
    const text = response ? await response.text() : "";
    for (const [, spec] of text.matchAll(IMPORTS)) {
      const dep = new URL(spec, url).href;
      if (seen.has(dep)) continue;
      seen.add(dep);
      await cache.add(dep);
      if (/\.m?js$/.test(dep)) queue.push(dep);
    }
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then(shellFiles)
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

/** Whether the worker answers this request: a GET of the shell, not the API. */
function isShell(request) {
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  return (
    request.method === "GET" &&
    url.origin === scope.origin &&
    url.pathname.startsWith(scope.pathname) &&
    !url.pathname.slice(scope.pathname.length).startsWith("v1/")
  );
}

/** The network's answer (the cache refreshed from it after: not on the page's way), else the cache's. */
async function networkFirst(event) {
  const { request } = event;
  try {
    const response = await fetch(request, { signal: AbortSignal.timeout(NETWORK_MS) });
    if (response.ok) {
      const copy = response.clone();
      event.waitUntil(caches.open(CACHE).then((cache) => cache.put(request, copy)));
    }
    return response;
  } catch (e) {
    // The page URL may carry ?db=NAME: the one index.html serves every such URL.
    const cached = await caches.match(request, { cacheName: CACHE, ignoreSearch: request.mode === "navigate" });
    if (cached) return cached;
    throw e;
  }
}

self.addEventListener("fetch", (event) => {
  if (isShell(event.request)) event.respondWith(networkFirst(event));
});

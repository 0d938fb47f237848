// The offline shell: this worker keeps the app's files (index.html, the CSS,
// every module app.js imports, directly or not) in a cache, so the page opens
// with no network and shows what IndexedDB holds.
//
// Online it stays out of the way: a page's files come from the network as
// without it (the relay sends no-cache: an upgraded relay serves the upgraded
// app at once), and only the page itself (the navigation) passes through it.
// When that fails (no network, relay down, no answer in 4 s) the cached
// index.html answers, and that page's files come from the cache too. After
// each page opened online the cache is refreshed from the network, a while
// later, off the page's way. The API (/v1/...) never goes through the cache.

const CACHE = "felund-shell";
const ENTRY = ["./", "index.html", "style.css", "favicon.svg", "manifest.webmanifest", "app.js"];
// Static imports and import("…") of relative modules: how the shell's modules are found.
const IMPORTS = /(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"'\s]+)["']/g;
const MAX_FILES = 200; // the crawl is bounded, whatever the files say
const NETWORK_MS = 4000; // a network that does not answer is as good as none
const REFRESH_AFTER_MS = 5000; // the page loads first, then the cache is refreshed
const REFRESH_EVERY_MS = 60_000; // at most this often (while the worker lives)
const MAX_OFFLINE_PAGES = 100;
const offlinePages = new Set(); // ids of the pages opened from the cache: their files come from it
let refreshedAt = 0;

/** Put every file of the shell into the cache: the entry files and, from app.js on, each module imported. */
async function cacheShell() {
  const cache = await caches.open(CACHE);
  const seen = new Set(ENTRY.map((p) => new URL(p, self.registration.scope).href));
  await cache.addAll([...seen]);
  const queue = [...seen].filter((u) => u.endsWith(".js"));
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
  event.waitUntil(cacheShell().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

/** Whether this GET is of the shell (same origin, under our scope), not of the API. */
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

/** The page from the network (the cache refreshed a while after), else index.html from the cache. */
async function openPage(event) {
  try {
    const response = await fetch(event.request, { signal: AbortSignal.timeout(NETWORK_MS) });
    if (response.ok && Date.now() - refreshedAt > REFRESH_EVERY_MS) {
      refreshedAt = Date.now();
      event.waitUntil(
        new Promise((resolve) => setTimeout(resolve, REFRESH_AFTER_MS))
          .then(cacheShell)
          .catch(() => {}), // the network went again: the cache keeps what it has
      );
    }
    return response;
  } catch (e) {
    // The page URL may carry ?db=NAME: the one index.html serves every such URL.
    const cached = await caches.match(event.request, { cacheName: CACHE, ignoreSearch: true });
    if (!cached) throw e;
    if (offlinePages.size >= MAX_OFFLINE_PAGES) offlinePages.clear();
    offlinePages.add(event.resultingClientId);
    return cached;
  }
}

/** A file of a page opened from the cache: from the cache, else the network. */
async function fromCache(request) {
  return (await caches.match(request, { cacheName: CACHE })) || fetch(request);
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  if (!isShell(request)) return;
  if (request.mode === "navigate") event.respondWith(openPage(event));
  else if (offlinePages.has(event.clientId)) event.respondWith(fromCache(request));
});

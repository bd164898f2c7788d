// The chat UI's service worker: the app shell is served from the network when there is
// one (and cached), from the cache when there is none, so a reload while offline keeps the
// page — and the sends queued in sessionStorage — until the network is back.
const CACHE = "tidings-shell-v1";
const SHELL = [
  "/",
  "/static/app.js",
  "/static/style.css",
  "/static/tidings.js",
  "/static/realtime-tests.js",
  "/static/lib/client.js",
  "/static/lib/machine.js",
  "/static/lib/ordering.js",
  "/static/lib/replica.js",
  "/static/lib/session.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const shell = url.origin === self.location.origin && (url.pathname === "/" || url.pathname.startsWith("/static/"));
  if (event.request.method !== "GET" || !shell) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(url.pathname === "/" ? "/" : event.request, copy));
        return response;
      })
      .catch(() => caches.match(url.pathname === "/" ? "/" : event.request).then((hit) => hit ?? Response.error())),
  );
});

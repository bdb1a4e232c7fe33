// Live parts of server-rendered pages: an element with `data-live="<url>"` is replaced by
// the element with the same id in the HTML that URL returns — at once when the engine's
// event stream named in `data-events` says `changed`, and otherwise every `data-interval`
// ms (slower while the stream is open: it is only a safety net then). The server drops
// `data-live` once nothing can change (a finished run), which stops both. A stream the
// engine refuses (429: every place it gives this client is taken) leaves the page polling
// at its own pace, and is tried again every STREAM_RETRY ms; one that ends (an anonymous
// stream's lifetime) is reopened by the browser. No HTML is built here: the server renders
// (and escapes) it all. `<html data-live-stream>` says whether the stream is open (for
// tests and the curious).
//
// Elements that hold client state (the DAG's viewport and open groups, a half-written
// comment) carry `data-keep` and an id: they stay in the page across refreshes, put in
// place of their fresh copy, which they first receive in a `plue:refresh` event
// (`event.detail.fresh`) to take what changed; their scroll offsets (and those of their
// `[data-keep-scroll]` descendants) and the focus inside them are kept. A kept element the fresh HTML no longer has is dropped. After each
// refresh `document` gets a `plue:live` event (`detail.section`: the new element).
"use strict";
(function () {
  var STREAM_INTERVAL = 10000;
  var STREAM_RETRY = 30000;
  // Replaces `current` by `fresh`, keeping `current`'s `[data-keep]` elements.
  function swap(current, fresh) {
    var keeping = performance.now();
    var active = document.activeElement;
    var restore = [];
    current.querySelectorAll("[data-keep][id]").forEach(function (kept) {
      var copy = null;
      fresh.querySelectorAll("[data-keep][id]").forEach(function (candidate) {
        if (!copy && candidate.id === kept.id) copy = candidate;
      });
      if (!copy || copy === kept) return;
      kept.dispatchEvent(new CustomEvent("plue:refresh", { detail: { fresh: copy } }));
      [kept].concat(Array.prototype.slice.call(kept.querySelectorAll("[data-keep-scroll]"))).forEach(function (e) {
        if (e.scrollTop || e.scrollLeft) restore.push([e, e.scrollTop, e.scrollLeft]);
      });
      copy.replaceWith(kept);
    });
    performance.measure("plue-live-keep", { start: keeping });
    current.replaceWith(fresh);
    restore.forEach(function (r) {
      r[0].scrollTop = r[1];
      r[0].scrollLeft = r[2];
    });
    if (active && active !== document.body && fresh.contains(active) && document.activeElement !== active) {
      active.focus({ preventScroll: true });
    }
    document.dispatchEvent(new CustomEvent("plue:live", { detail: { section: fresh } }));
  }
  function live(element) {
    var url = element.getAttribute("data-live");
    var base = parseInt(element.getAttribute("data-interval"), 10) || 2000;
    var interval = base;
    var id = element.id;
    var timer = null;
    var busy = false;
    var again = false;
    var stopped = false;
    var source = null;
    var streaming = false;
    function schedule() {
      if (stopped) return;
      if (timer !== null) window.clearTimeout(timer);
      timer = window.setTimeout(tick, streaming ? Math.max(interval, STREAM_INTERVAL) : interval);
    }
    function stop() {
      stopped = true;
      if (timer !== null) window.clearTimeout(timer);
      timer = null;
      if (source) source.close();
    }
    function now() {
      if (stopped) return;
      if (busy) {
        again = true;
        return;
      }
      if (timer !== null) window.clearTimeout(timer);
      timer = null;
      tick();
    }
    function tick() {
      timer = null;
      if (document.hidden) {
        schedule();
        return;
      }
      busy = true;
      again = false;
      var asked = performance.now();
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          busy = false;
          performance.measure("plue-live-fetch", { start: asked });
          var parsing = performance.now();
          var parsed = new DOMParser().parseFromString(html, "text/html");
          performance.measure("plue-live-parse", { start: parsing });
          var fresh = parsed.getElementById(id);
          var current = document.getElementById(id);
          if (!fresh || !current) return stop();
          // Timings for the curious (and tests/dashboard_dag.rs's bench note):
          // plue-live-fetch, -parse, -keep (merging kept elements), -swap (all of it).
          var started = performance.now();
          swap(current, document.adoptNode(fresh));
          performance.measure("plue-live-swap", { start: started });
          if (!fresh.hasAttribute("data-live")) return stop();
          url = fresh.getAttribute("data-live");
          base = parseInt(fresh.getAttribute("data-interval"), 10) || base;
          interval = base;
          if (again) now();
          else schedule();
        })
        .catch(function () {
          // The engine restarts or the network blinks: try again, a little later.
          busy = false;
          interval = Math.min(interval * 2, 15000);
          schedule();
        });
    }
    var events = element.getAttribute("data-events");
    function open() {
      if (stopped) return;
      source = new EventSource(events);
      source.addEventListener("changed", now);
      // (Re)connected: catch up on what happened while the stream was down.
      source.addEventListener("open", function () {
        streaming = true;
        document.documentElement.setAttribute("data-live-stream", "open");
        now();
      });
      source.addEventListener("error", function () {
        streaming = false;
        document.documentElement.setAttribute("data-live-stream", "down");
        schedule();
        // Refused (429, 401, 5xx): the browser does not retry; poll, and try later.
        if (source.readyState === EventSource.CLOSED) window.setTimeout(open, STREAM_RETRY);
      });
    }
    if (events && window.EventSource) open();
    schedule();
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer !== null) now();
    });
  }
  document.querySelectorAll("[data-live]").forEach(live);
})();

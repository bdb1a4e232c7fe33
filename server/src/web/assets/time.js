// Times and durations the server rendered with the `when` and `elapsed` filters
// (web/render.rs), kept current in the browser:
// - `<time data-ms="…">`: the relative text ("5 min ago", "in 10 min") is recomputed every
//   second and the title becomes the absolute time in the reader's own time zone (the
//   server only knows UTC);
// - `<span class="elapsed" data-since="…">` without `data-until`: the running duration
//   ("3m 04s") ticks every second.
// Elements swapped in by live.js are picked up at once (a MutationObserver). Only text and title
// attributes are written (textContent, never HTML). `window.PlueTime` exposes the two
// formatters for other scripts (the timeline).
"use strict";
(function () {
  function duration(ms) {
    if (!(ms >= 0)) return "";
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (ms < 3600000) return Math.floor(ms / 60000) + "m " + pad(Math.floor((ms % 60000) / 1000)) + "s";
    return Math.floor(ms / 3600000) + "h " + pad(Math.floor((ms % 3600000) / 60000)) + "m";
  }
  // Rounded to the nearest unit, as web/render.rs `relative`: 2 h less a moment is "in 2 h".
  function relative(delta) {
    var ms = Math.abs(delta);
    var seconds = Math.round(ms / 1000);
    var minutes = Math.round(ms / 60000);
    var hours = Math.round(ms / 3600000);
    var days = Math.round(ms / 86400000);
    var amount;
    if (seconds < 5) return "just now";
    if (seconds < 60) amount = seconds + " s";
    else if (minutes < 60) amount = minutes + " min";
    else if (hours < 24) amount = hours + " h";
    else if (days === 1) amount = "1 day";
    else amount = days + " days";
    return delta < 0 ? amount + " ago" : "in " + amount;
  }
  function absolute(ms) {
    var d = new Date(ms);
    var zone = "";
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      zone = "";
    }
    return d.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit"
    }) + (zone ? " (" + zone + ")" : "");
  }
  function tick() {
    var now = Date.now();
    var times = document.querySelectorAll("time[data-ms]");
    for (var i = 0; i < times.length; i++) {
      var ms = parseInt(times[i].getAttribute("data-ms"), 10);
      if (isNaN(ms)) continue;
      var text = relative(ms - now);
      if (times[i].textContent !== text) times[i].textContent = text;
      if (!times[i].hasAttribute("data-local")) {
        times[i].setAttribute("title", absolute(ms));
        times[i].setAttribute("data-local", "");
      }
    }
    var spans = document.querySelectorAll(".elapsed[data-since]:not([data-until])");
    for (var j = 0; j < spans.length; j++) {
      var since = parseInt(spans[j].getAttribute("data-since"), 10);
      if (isNaN(since)) continue;
      var value = duration(Math.max(0, now - since));
      if (spans[j].textContent !== value) spans[j].textContent = value;
    }
  }
  window.PlueTime = { duration: duration, relative: relative, absolute: absolute, tick: tick };
  // Parts live.js swaps in get their local titles and current text at once, not at the
  // next second.
  var pending = false;
  function soon() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      tick();
    });
  }
  function start() {
    tick();
    if (window.MutationObserver) {
      new MutationObserver(function (changes) {
        // Elements only: the text this script writes adds text nodes, never elements.
        for (var i = 0; i < changes.length; i++) {
          var added = changes[i].addedNodes;
          for (var j = 0; j < added.length; j++) {
            if (added[j].nodeType === 1) return soon();
          }
        }
      }).observe(document.body, { childList: true, subtree: true });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  window.setInterval(tick, 1000);
})();

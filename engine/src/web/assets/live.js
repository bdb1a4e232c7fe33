// Live parts of server-rendered pages: an element with `data-live="<url>"` is replaced,
// every `data-interval` ms, by the element with the same id in the HTML that URL returns.
// The server drops `data-live` once nothing can change (a finished run), which stops the
// polling. No HTML is built here: the server renders (and escapes) it all.
"use strict";
(function () {
  function poll(element) {
    var url = element.getAttribute("data-live");
    var interval = parseInt(element.getAttribute("data-interval"), 10) || 2000;
    var id = element.id;
    var timer = null;
    function schedule() {
      timer = window.setTimeout(tick, interval);
    }
    function tick() {
      if (document.hidden) {
        schedule();
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var parsed = new DOMParser().parseFromString(html, "text/html");
          var fresh = parsed.getElementById(id);
          var current = document.getElementById(id);
          timer = null;
          if (!fresh || !current) return;
          current.replaceWith(document.adoptNode(fresh));
          if (fresh.hasAttribute("data-live")) {
            url = fresh.getAttribute("data-live");
            interval = parseInt(fresh.getAttribute("data-interval"), 10) || interval;
            schedule();
          }
        })
        .catch(function () {
          // The engine restarts or the network blinks: try again, a little later.
          interval = Math.min(interval * 2, 15000);
          schedule();
        });
    }
    schedule();
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer !== null) {
        window.clearTimeout(timer);
        tick();
      }
    });
  }
  document.querySelectorAll("[data-live]").forEach(poll);
})();

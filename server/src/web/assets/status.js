// The status look for scripts: the glyph beside each status word (the same glyphs as the
// server's icon filters in web/icons.rs) and the badge markup every page uses,
// `<span class="badge S"><span aria-hidden="true">ICON</span> S</span>`, so a status never
// rests on colour alone. Colours are the stylesheet's `--status-S` properties.
(function () {
  "use strict";
  var icons = {
    succeeded: "✓",
    failed: "✗",
    running: "◷",
    queued: "⋯",
    claimed: "◔",
    pending: "○",
    waiting: "‖",
    skipped: "⤼",
    cancelled: "⊘",
    // Proposal and runner states look like the status they resemble.
    applied: "✓",
    rejected: "✗",
    lost: "✗",
    applying: "◷",
    busy: "◷",
    ready: "⋯",
    idle: "○",
    withheld: "⊘",
    gone: "⊘"
  };

  function icon(status) {
    return Object.prototype.hasOwnProperty.call(icons, status) ? icons[status] : "•";
  }

  // A badge element for `status` (text nodes only: a status is never parsed as HTML).
  function badge(status) {
    var outer = document.createElement("span");
    outer.className = "badge " + status;
    var glyph = document.createElement("span");
    glyph.setAttribute("aria-hidden", "true");
    glyph.textContent = icon(status);
    outer.appendChild(glyph);
    outer.appendChild(document.createTextNode(" " + status));
    return outer;
  }

  // Turns an existing badge into `status`'s (class, glyph and word), in place.
  function setBadge(element, status) {
    element.replaceChildren(badge(status).firstChild, document.createTextNode(" " + status));
    var kept = Array.prototype.filter.call(element.classList, function (name) {
      return name === "badge" || !Object.prototype.hasOwnProperty.call(icons, name);
    });
    element.className = kept.concat([status]).join(" ");
  }

  window.PlueStatus = { icons: icons, icon: icon, badge: badge, setBadge: setBadge };
})();

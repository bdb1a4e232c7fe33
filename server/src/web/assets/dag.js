// The run page's DAG (templates/run_dag.html; the server lays it out, web/dag/): zoom with
// the buttons, Ctrl/⌘ + wheel (a trackpad's pinch) or two fingers' pinch on a touch
// screen, pan by dragging, Fit and 100%, and a group node
// that lists its steps when clicked (or Enter/Space). The block carries `data-keep`, so
// live.js keeps it across refreshes and hands over the fresh copy in a `plue:refresh`
// event: when the layout's shape is the same (only statuses changed), nodes, edges and
// member rows are updated in place (class, data-status, href, the `data-f` texts;
// `data-swap` rows take the fresh children when their status changed), so the viewport,
// open groups and focus stay; when the shape changed, the drawing is swapped but the
// viewport and open groups are kept. No HTML is built here: every element and text comes
// from the server's escaped markup. Without this script the graph is a plain SVG in a
// scrolling box.
"use strict";
(function () {
  var MIN_SCALE = 0.1;
  var MAX_SCALE = 3;
  var STEP = 1.25;
  // The first view scales a wide graph down, but not below this (labels stay readable).
  var MIN_FIRST_SCALE = 0.5;
  var MIN_HEIGHT = 160;
  var MARGIN = 8;
  var DRAG_THRESHOLD = 4;

  function setup(block) {
    if (block.plueDag) return;
    var wrap = block.querySelector(".dag-wrap");
    var svg = block.querySelector("svg.dag");
    if (!wrap || !svg) return;
    var state = { k: 1, x: 0, y: 0, width: 0, height: 0 };
    block.plueDag = state;

    function view() {
      return svg.querySelector(".dag-view");
    }
    function content() {
      return {
        w: parseFloat(svg.getAttribute("data-width")) || 1,
        h: parseFloat(svg.getAttribute("data-height")) || 1
      };
    }
    function clamp(value, low, high) {
      return Math.min(Math.max(value, low), high);
    }
    // Keeps some of the graph in the box whatever the user does.
    function bound() {
      var c = content();
      var w = c.w * state.k;
      var h = c.h * state.k;
      var box = wrap.clientWidth;
      state.x = clamp(state.x, Math.min(0, box - w) - box / 2, Math.max(0, box - w) + box / 2);
      state.y = clamp(state.y, Math.min(0, state.height - h) - state.height / 2,
        Math.max(0, state.height - h) + state.height / 2);
    }
    function apply() {
      bound();
      var g = view();
      if (g) {
        g.setAttribute("transform", "translate(" + state.x.toFixed(1) + " " + state.y.toFixed(1) +
          ") scale(" + state.k.toFixed(4) + ")");
      }
      block.setAttribute("data-scale", state.k.toFixed(3));
    }
    // Zooms by `factor` keeping the graph point under (px, py) (box coordinates) still.
    function zoom(factor, px, py) {
      var k = clamp(state.k * factor, MIN_SCALE, MAX_SCALE);
      if (px === undefined) {
        px = wrap.clientWidth / 2;
        py = state.height / 2;
      }
      state.x = px - (px - state.x) * (k / state.k);
      state.y = py - (py - state.y) * (k / state.k);
      state.k = k;
      apply();
    }
    // The whole graph in the box, centred (never larger than 100%).
    function fit() {
      var c = content();
      var k = clamp(Math.min(1, wrap.clientWidth / c.w, state.height / c.h), MIN_SCALE, MAX_SCALE);
      state.k = k;
      state.x = (wrap.clientWidth - c.w * k) / 2;
      state.y = Math.max(0, (state.height - c.h * k) / 2);
      apply();
    }
    function actual() {
      var c = content();
      state.k = 1;
      state.x = Math.max(0, (wrap.clientWidth - c.w) / 2);
      state.y = 0;
      apply();
    }
    // The first view: as large as readable, the top of the graph (its roots) in view.
    function first() {
      var c = content();
      var limit = Math.max(MIN_HEIGHT, Math.round(window.innerHeight * 0.7));
      var box = Math.max(wrap.clientWidth, 1);
      var k = clamp(Math.min(1, box / c.w, limit / c.h), MIN_FIRST_SCALE, 1);
      state.height = clamp(Math.ceil(c.h * k) + MARGIN, MIN_HEIGHT, limit);
      svg.setAttribute("width", "100%");
      svg.setAttribute("height", String(state.height));
      svg.removeAttribute("viewBox");
      state.k = k;
      state.x = Math.max(0, (box - c.w * k) / 2);
      state.y = Math.max(0, (state.height - c.h * k) / 2);
      apply();
    }

    wrap.classList.add("zoomable");
    var tools = block.querySelector(".dag-tools");
    if (tools) tools.hidden = false;
    first();

    block.addEventListener("click", function (event) {
      var button = event.target.closest("[data-zoom], [data-close]");
      if (button && block.contains(button)) {
        var what = button.getAttribute("data-zoom");
        if (what === "in") zoom(STEP);
        else if (what === "out") zoom(1 / STEP);
        else if (what === "fit") fit();
        else if (what === "reset") actual();
        else toggle(button.getAttribute("data-close"), false);
        return;
      }
      var group = event.target.closest(".node.group");
      if (group && svg.contains(group)) toggle(group.getAttribute("data-group"));
    });
    block.addEventListener("keydown", function (event) {
      var group = event.target.closest && event.target.closest(".node.group");
      if (group && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        toggle(group.getAttribute("data-group"));
      } else if (wrap.contains(event.target) && !event.ctrlKey && !event.metaKey) {
        if (event.key === "+" || event.key === "=") zoom(STEP);
        else if (event.key === "-") zoom(1 / STEP);
        else if (event.key === "0") fit();
      }
    });

    // Opens (or closes, or flips) group `index`'s list of steps.
    function toggle(index, open) {
      var node = svg.querySelector('.node.group[data-group="' + index + '"]');
      var panel = block.querySelector("#dag-group-" + index);
      if (!node || !panel) return;
      if (open === undefined) open = panel.hidden;
      panel.hidden = !open;
      node.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) panel.scrollIntoView({ block: "nearest" });
    }

    // Ctrl/⌘ + wheel (and a trackpad's pinch) zooms about the pointer; a plain wheel
    // scrolls the page, as everywhere else.
    wrap.addEventListener("wheel", function (event) {
      if (!event.ctrlKey && !event.metaKey) return;
      event.preventDefault();
      var rect = wrap.getBoundingClientRect();
      zoom(Math.exp(-event.deltaY * 0.002), event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });

    // Dragging pans; a press that does not move is a click (on a node: opens it). Two
    // fingers pinch: the graph zooms about the point between them and follows it.
    var drag = null;
    var dragged = false;
    var touches = new Map();
    var pinch = null;
    function pinchAt() {
      var points = Array.from(touches.values()).slice(0, 2);
      var rect = wrap.getBoundingClientRect();
      return {
        d: Math.max(Math.hypot(points[0].x - points[1].x, points[0].y - points[1].y), 1),
        x: (points[0].x + points[1].x) / 2 - rect.left,
        y: (points[0].y + points[1].y) / 2 - rect.top
      };
    }
    wrap.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) return;
      touches.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (touches.size === 2) {
        // A second finger: no drag, no click; the pinch starts from here.
        var at = pinchAt();
        pinch = { d: at.d, px: at.x, py: at.y, k: state.k, x: state.x, y: state.y };
        drag = null;
        dragged = true;
        wrap.classList.add("dragging");
        return;
      }
      if (touches.size > 2) return;
      drag = { id: event.pointerId, px: event.clientX, py: event.clientY, x: state.x, y: state.y, moving: false };
      dragged = false;
    });
    wrap.addEventListener("pointermove", function (event) {
      if (touches.has(event.pointerId)) touches.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (pinch && touches.size >= 2) {
        var at = pinchAt();
        var k = clamp(pinch.k * at.d / pinch.d, MIN_SCALE, MAX_SCALE);
        // The graph point that was under the fingers' middle stays under it.
        state.x = at.x - (pinch.px - pinch.x) * (k / pinch.k);
        state.y = at.y - (pinch.py - pinch.y) * (k / pinch.k);
        state.k = k;
        apply();
        return;
      }
      if (!drag || event.pointerId !== drag.id) return;
      var dx = event.clientX - drag.px;
      var dy = event.clientY - drag.py;
      if (!drag.moving && Math.abs(dx) + Math.abs(dy) < DRAG_THRESHOLD) return;
      if (!drag.moving) {
        drag.moving = true;
        try {
          wrap.setPointerCapture(event.pointerId);
        } catch (e) {
          // The pointer is already gone: the drag ends with it.
        }
        wrap.classList.add("dragging");
      }
      state.x = drag.x + dx;
      state.y = drag.y + dy;
      apply();
    });
    function end(event) {
      touches.delete(event.pointerId);
      if (pinch) {
        if (touches.size < 2) {
          pinch = null;
          wrap.classList.remove("dragging");
        }
        return;
      }
      if (!drag || event.pointerId !== drag.id) return;
      dragged = drag.moving;
      drag = null;
      wrap.classList.remove("dragging");
    }
    wrap.addEventListener("pointerup", end);
    wrap.addEventListener("pointercancel", end);
    // Two fingers on the graph are the graph's: the browser neither scrolls nor zooms the
    // page for them (one finger still scrolls it vertically: touch-action in dag.css).
    function ownPinch(event) {
      if (event.touches.length > 1 && event.cancelable) event.preventDefault();
    }
    wrap.addEventListener("touchstart", ownPinch, { passive: false });
    wrap.addEventListener("touchmove", ownPinch, { passive: false });
    // The click that ends a drag does not follow the link under the pointer.
    wrap.addEventListener("click", function (event) {
      if (dragged) {
        dragged = false;
        event.preventDefault();
        event.stopPropagation();
      }
    }, true);

    window.addEventListener("resize", function () {
      apply();
    });

    block.addEventListener("plue:refresh", function (event) {
      var fresh = event.detail && event.detail.fresh;
      if (!fresh) return;
      if (fresh.getAttribute("data-shape") === block.getAttribute("data-shape")) {
        update(block, fresh);
      } else {
        redraw(fresh);
      }
    });

    // Another plan shape (rare: a run's plan is fixed): the fresh drawing and lists, with
    // the viewport and the groups that were open kept.
    function redraw(fresh) {
      var open = [];
      block.querySelectorAll(".dag-members").forEach(function (panel) {
        if (!panel.hidden) open.push(panel.id);
      });
      var freshSvg = fresh.querySelector("svg.dag");
      var freshView = freshSvg && freshSvg.querySelector(".dag-view");
      if (freshView) {
        view().replaceWith(document.importNode(freshView, true));
        svg.setAttribute("data-width", freshSvg.getAttribute("data-width"));
        svg.setAttribute("data-height", freshSvg.getAttribute("data-height"));
      }
      block.querySelectorAll(".dag-members, .dag-note, .dag-hint").forEach(function (old) {
        old.remove();
      });
      fresh.querySelectorAll(".dag-note, .dag-members").forEach(function (part) {
        block.appendChild(document.importNode(part, true));
      });
      var hint = fresh.querySelector(".dag-hint");
      if (hint && tools) tools.appendChild(document.importNode(hint, true));
      block.setAttribute("data-shape", fresh.getAttribute("data-shape"));
      open.forEach(function (id) {
        toggle(id.replace("dag-group-", ""), true);
      });
      apply();
    }
  }

  // Same shape: each keyed element takes its fresh copy's class, status and texts.
  function update(block, fresh) {
    var current = new Map();
    block.querySelectorAll("[data-k]").forEach(function (element) {
      current.set(element.getAttribute("data-k"), element);
    });
    fresh.querySelectorAll("[data-k]").forEach(function (copy) {
      var element = current.get(copy.getAttribute("data-k"));
      if (!element) return;
      var moved = element.getAttribute("data-status") !== copy.getAttribute("data-status");
      ["class", "data-status", "href"].forEach(function (name) {
        var value = copy.getAttribute(name);
        if (value !== null && element.getAttribute(name) !== value) element.setAttribute(name, value);
      });
      if (copy.hasAttribute("data-swap")) {
        // A member row is drawn from its status alone.
        if (moved) {
          element.replaceChildren.apply(element, Array.prototype.map.call(copy.childNodes, function (n) {
            return document.importNode(n, true);
          }));
        }
        return;
      }
      var mine = element.querySelectorAll("[data-f]");
      var theirs = copy.querySelectorAll("[data-f]");
      for (var i = 0; i < mine.length && i < theirs.length; i++) {
        if (mine[i].textContent !== theirs[i].textContent) mine[i].textContent = theirs[i].textContent;
      }
    });
  }

  function all() {
    document.querySelectorAll(".dag-block").forEach(setup);
  }
  all();
  // A block that appears with a refresh (the plan was evaluated meanwhile).
  document.addEventListener("plue:live", all);
})();

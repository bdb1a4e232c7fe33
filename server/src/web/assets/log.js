// The step log viewer: loads the stored lines (JSON lines), then follows new ones over SSE
// (the browser resumes with Last-Event-ID after a reconnect, e.g. when an anonymous
// stream's lifetime ends), and draws only the lines in view, so a 100,000-line log opens
// and scrolls fast. When the engine refuses the stream (429: every place it gives this
// client is taken; or 401, 5xx) the page polls the JSON lines after the last one shown
// instead, and tries the stream again now and then. Every piece of log text becomes a DOM
// text node (textContent); nothing from the log is ever parsed as HTML.
"use strict";
(function () {
  var root = document.getElementById("log");
  if (!root) return;
  var LINE_HEIGHT = 18; // .line height in app.css
  var OVERSCAN = 40;
  var streamUrl = root.getAttribute("data-stream");
  var finished = root.getAttribute("data-done") === "true";
  var viewport = document.getElementById("viewport");
  var spacer = document.getElementById("spacer");
  var linesEl = document.getElementById("lines");
  var stateEl = document.getElementById("state");
  var searchEl = document.getElementById("search");
  var hitsEl = document.getElementById("hits");
  var followEl = document.getElementById("follow");
  var timestampsEl = document.getElementById("timestamps");

  // entries: what is drawn, one per row. A row is a log line ({n, text, stream, ts}), an
  // attempt marker ({marker}), or a line of an llm step's answer assembled from tokens.
  var entries = [];
  var rowOfLine = [0]; // rowOfLine[n] = the row of line number n
  var last = { attempt: -1, seq: -1 };
  var openAnswer = null; // the llm answer row that token pieces extend
  var matches = [];
  var matchRows = new Set();
  var current = -1;
  var query = "";
  var target = 0;
  var renderQueued = false;
  var programmatic = false;

  followEl.checked = !finished && !location.hash;
  viewport.classList.add("hide-ts");

  function setState(text) {
    stateEl.textContent = text;
  }

  function push(row) {
    entries.push(row);
    if (!row.marker) {
      row.n = rowOfLine.length;
      rowOfLine.push(entries.length - 1);
    }
    if (query && contains(row)) {
      matches.push(entries.length - 1);
      matchRows.add(entries.length - 1);
    }
    return row;
  }

  function add(line) {
    if (line.attempt < last.attempt || (line.attempt === last.attempt && line.seq <= last.seq)) {
      return; // already shown (a resumed stream never repeats, but be sure)
    }
    if (line.attempt !== last.attempt && (last.attempt !== -1 || line.attempt > 1)) {
      push({ marker: true, text: "attempt " + line.attempt });
      openAnswer = null;
    }
    last = { attempt: line.attempt, seq: line.seq };
    if (line.stream === "token") {
      var pieces = String(line.text).split("\n");
      for (var i = 0; i < pieces.length; i++) {
        if (i > 0 || openAnswer === null) {
          openAnswer = push({ text: "", stream: "token", ts: line.ts });
        }
        openAnswer.text += pieces[i];
        openAnswer.plain = undefined;
        // The row grew: it may match the search now.
        var at = entries.length - 1;
        if (query && !matchRows.has(at) && contains(openAnswer)) {
          matches.push(at);
          matchRows.add(at);
        }
      }
      return;
    }
    openAnswer = null;
    var row = { text: describe(line), stream: line.stream, ts: line.ts };
    if (TYPED[line.stream]) row.full = pretty(line.text);
    push(row);
  }

  // llm steps' typed lines: shown folded on one row, whole in the detail panel on a click.
  var TYPED = { tool_call: true, tool_result: true, usage: true };
  function pretty(text) {
    try {
      var value = JSON.parse(text);
      if (value && typeof value.content === "string") {
        var content = value.content;
        delete value.content;
        return JSON.stringify(value, null, 2) + "\n\n" + content;
      }
      return JSON.stringify(value, null, 2);
    } catch (e) {
      return String(text);
    }
  }
  var detailEl = document.getElementById("detail");
  var detailText = document.getElementById("detail-text");
  function showDetail(row) {
    detailText.textContent = row.full;
    detailEl.hidden = false;
    detailEl.scrollIntoView({ block: "nearest" });
  }
  document.getElementById("detail-close").addEventListener("click", function () {
    detailEl.hidden = true;
  });

  // llm steps' typed lines, one readable row each.
  function describe(line) {
    var text = String(line.text);
    if (line.stream !== "tool_call" && line.stream !== "tool_result" && line.stream !== "usage") {
      return text;
    }
    var value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      return line.stream + ": " + text;
    }
    if (line.stream === "tool_call") {
      return "\u2192 " + value.name + " " + JSON.stringify(value.input);
    }
    if (line.stream === "tool_result") {
      var content = typeof value.content === "string" ? value.content : JSON.stringify(value.content);
      return "\u2190 " + (value.is_error ? "error " : "") + "(" + value.bytes + " bytes) " + content.replace(/\n/g, "\u21b5");
    }
    return "usage: " + Object.keys(value).map(function (k) { return k + " " + value[k]; }).join(", ");
  }

  // ANSI escape sequences: SGR colours become classes (16 colours) or CSSOM colours (256,
  // true colour); every other control sequence is dropped.
  var ESCAPES = /\x1b\[[0-9;:?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g;
  var CSI = /\x1b\[([0-9;:?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g;
  var CUBE = [0, 95, 135, 175, 215, 255];

  function plain(row) {
    if (row.plain === undefined) row.plain = row.text.replace(ESCAPES, "").toLowerCase();
    return row.plain;
  }

  function colour256(n) {
    if (n < 16) return { cls: n };
    if (n >= 232) {
      var g = 8 + 10 * (n - 232);
      return { rgb: "rgb(" + g + "," + g + "," + g + ")" };
    }
    n -= 16;
    return { rgb: "rgb(" + CUBE[Math.floor(n / 36)] + "," + CUBE[Math.floor(n / 6) % 6] + "," + CUBE[n % 6] + ")" };
  }

  function applySgr(s, params) {
    var codes = params === "" ? [0] : params.split(/[;:]/).map(function (p) { return parseInt(p, 10) || 0; });
    for (var i = 0; i < codes.length; i++) {
      var c = codes[i];
      if (c === 0) { s.fg = s.bg = null; s.b = s.d = s.i = s.u = false; }
      else if (c === 1) s.b = true;
      else if (c === 2) s.d = true;
      else if (c === 3) s.i = true;
      else if (c === 4) s.u = true;
      else if (c === 22) s.b = s.d = false;
      else if (c === 23) s.i = false;
      else if (c === 24) s.u = false;
      else if (c >= 30 && c <= 37) s.fg = { cls: c - 30 };
      else if (c === 39) s.fg = null;
      else if (c >= 40 && c <= 47) s.bg = { cls: c - 40 };
      else if (c === 49) s.bg = null;
      else if (c >= 90 && c <= 97) s.fg = { cls: c - 90 + 8 };
      else if (c >= 100 && c <= 107) s.bg = { cls: c - 100 + 8 };
      else if (c === 38 || c === 48) {
        var colour = null;
        if (codes[i + 1] === 5 && i + 2 < codes.length) { colour = colour256(codes[i + 2] & 255); i += 2; }
        else if (codes[i + 1] === 2 && i + 4 < codes.length) {
          colour = { rgb: "rgb(" + (codes[i + 2] & 255) + "," + (codes[i + 3] & 255) + "," + (codes[i + 4] & 255) + ")" };
          i += 4;
        }
        if (c === 38) s.fg = colour; else s.bg = colour;
      }
    }
  }

  function emit(parent, text, s) {
    if (!text) return;
    if (!s.fg && !s.bg && !s.b && !s.d && !s.i && !s.u) {
      parent.appendChild(document.createTextNode(text));
      return;
    }
    var span = document.createElement("span");
    var classes = [];
    if (s.b) classes.push("a-b");
    if (s.d) classes.push("a-d");
    if (s.i) classes.push("a-i");
    if (s.u) classes.push("a-u");
    if (s.fg && s.fg.cls !== undefined) classes.push("f" + s.fg.cls);
    if (s.bg && s.bg.cls !== undefined) classes.push("b" + s.bg.cls);
    span.className = classes.join(" ");
    if (s.fg && s.fg.rgb) span.style.color = s.fg.rgb;
    if (s.bg && s.bg.rgb) span.style.backgroundColor = s.bg.rgb;
    span.textContent = text;
    parent.appendChild(span);
  }

  function ansi(text, parent) {
    if (text.indexOf("\x1b") < 0) {
      parent.textContent = text;
      return;
    }
    var s = { fg: null, bg: null, b: false, d: false, i: false, u: false };
    var at = 0;
    var m;
    CSI.lastIndex = 0;
    while ((m = CSI.exec(text)) !== null) {
      emit(parent, text.slice(at, m.index), s);
      if (m[2] === "m") applySgr(s, m[1]);
      at = CSI.lastIndex;
    }
    emit(parent, text.slice(at), s);
  }

  function time(ts) {
    return ts ? new Date(ts).toISOString().slice(11, 23) : "";
  }

  function rowElement(i) {
    var row = entries[i];
    var div = document.createElement("div");
    div.className = "line";
    if (row.marker) {
      div.className += " marker";
      div.textContent = "\u2500\u2500 " + row.text + " \u2500\u2500";
      return div;
    }
    div.id = "L" + row.n;
    if (row.stream === "stderr") div.className += " err";
    if (row.stream === "token") div.className += " answer";
    if (row.full !== undefined) div.className += " tool " + row.stream;
    if (matchRows.has(i)) div.className += " hit";
    if (current >= 0 && matches[current] === i) div.className += " current";
    if (target === row.n) div.className += " target";
    var number = document.createElement("a");
    number.className = "ln";
    number.href = "#L" + row.n;
    number.textContent = String(row.n);
    div.appendChild(number);
    var ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = time(row.ts);
    div.appendChild(ts);
    var text = document.createElement("span");
    text.className = "tx";
    ansi(row.text, text);
    if (row.full !== undefined) {
      text.title = "Show all of it";
      text.addEventListener("click", function () { showDetail(row); });
    }
    div.appendChild(text);
    return div;
  }

  function render() {
    renderQueued = false;
    if (query) showHits();
    spacer.style.height = entries.length * LINE_HEIGHT + "px";
    if (followEl.checked) {
      programmatic = true;
      viewport.scrollTop = viewport.scrollHeight;
    }
    var top = viewport.scrollTop;
    var first = Math.max(0, Math.floor(top / LINE_HEIGHT) - OVERSCAN);
    var end = Math.min(entries.length, Math.ceil((top + viewport.clientHeight) / LINE_HEIGHT) + OVERSCAN);
    linesEl.style.transform = "translateY(" + first * LINE_HEIGHT + "px)";
    var fragment = document.createDocumentFragment();
    for (var i = first; i < end; i++) fragment.appendChild(rowElement(i));
    linesEl.replaceChildren(fragment);
  }

  function queueRender() {
    if (!renderQueued) {
      renderQueued = true;
      window.requestAnimationFrame(render);
    }
  }

  function scrollToRow(row) {
    followEl.checked = false;
    programmatic = true;
    // The spacer may still have the height of the last frame's line count.
    spacer.style.height = entries.length * LINE_HEIGHT + "px";
    viewport.scrollTop = Math.max(0, row * LINE_HEIGHT - viewport.clientHeight / 2);
    queueRender();
  }

  viewport.addEventListener("scroll", function () {
    if (programmatic) {
      programmatic = false;
    } else if (viewport.scrollTop + viewport.clientHeight < viewport.scrollHeight - LINE_HEIGHT) {
      followEl.checked = false;
    }
    queueRender();
  });
  followEl.addEventListener("change", queueRender);
  timestampsEl.addEventListener("change", function () {
    viewport.classList.toggle("hide-ts", !timestampsEl.checked);
  });

  // #L120: the line to show once it is loaded.
  function readHash() {
    var m = /^#L(\d+)$/.exec(location.hash);
    target = m ? parseInt(m[1], 10) : 0;
    showTarget();
  }
  function showTarget() {
    if (target > 0 && target < rowOfLine.length) scrollToRow(rowOfLine[target]);
  }
  window.addEventListener("hashchange", readHash);

  // Search: every row whose text (without escapes) contains the query, case-insensitive.
  function contains(row) {
    return !row.marker && plain(row).indexOf(query) >= 0;
  }
  function search() {
    query = searchEl.value.toLowerCase();
    matches = [];
    matchRows = new Set();
    current = -1;
    if (query) {
      for (var i = 0; i < entries.length; i++) {
        if (contains(entries[i])) {
          matches.push(i);
          matchRows.add(i);
        }
      }
    }
    if (matches.length) step(1);
    showHits();
    queueRender();
  }
  function step(direction) {
    if (!matches.length) return;
    current = (current + direction + matches.length) % matches.length;
    scrollToRow(matches[current]);
    showHits();
  }
  function showHits() {
    hitsEl.textContent = query ? (matches.length ? current + 1 + " / " + matches.length : "no match") : "";
  }
  var searchTimer = null;
  searchEl.addEventListener("input", function () {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(search, 150);
  });
  searchEl.addEventListener("keydown", function (event) {
    if (event.key === "Enter") {
      event.preventDefault();
      step(event.shiftKey ? -1 : 1);
    }
  });
  document.getElementById("next").addEventListener("click", function () { step(1); });
  document.getElementById("prev").addEventListener("click", function () { step(-1); });

  function lineCount() {
    return rowOfLine.length - 1;
  }

  // The step's status once its log has ended (the header is the server's, re-read).
  function refreshHeader() {
    fetch(location.pathname, { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var parsed = new DOMParser().parseFromString(html, "text/html");
        var fresh = parsed.querySelector(".log-head");
        var old = document.querySelector(".log-head");
        if (fresh && old) old.replaceWith(document.adoptNode(fresh));
      })
      .catch(function () {});
  }

  function finish() {
    finished = true;
    setState("Complete · " + lineCount() + " lines");
    showTarget();
    queueRender();
    refreshHeader();
  }

  // The URL of the lines after the last one shown.
  function after(url) {
    return url + (last.attempt >= 0 ? "?after=" + last.attempt + ":" + last.seq : "");
  }

  function follow() {
    if (finished) return;
    var source = new EventSource(after(streamUrl));
    source.addEventListener("open", function () { setState("Live · " + lineCount() + " lines"); });
    source.addEventListener("line", function (event) {
      add(JSON.parse(event.data));
      setState("Live · " + lineCount() + " lines");
      queueRender();
    });
    source.addEventListener("end", function () {
      source.close();
      finish();
    });
    source.addEventListener("error", function () {
      if (finished) return;
      // The browser retries by itself (with Last-Event-ID) unless the answer was an error:
      // a 429 (no place for this client), a 401 or a 5xx. Then poll instead.
      if (source.readyState === EventSource.CLOSED) {
        poll(0);
      } else {
        setState("Reconnecting…");
      }
    });
  }

  // Polling, while the stream is refused: every POLL_MS, whether the step has ended (the
  // page's own data-done, read before the lines so that no line stored before the end is
  // missed), then the lines after the last one shown; every STREAM_EVERY polls, the stream
  // is tried again instead (a place may be free).
  var POLL_MS = 3000;
  var STREAM_EVERY = 10;
  function poll(count) {
    setState("Polling · " + lineCount() + " lines");
    window.setTimeout(function () {
      var ended = false;
      fetch(location.pathname, { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var parsed = new DOMParser().parseFromString(html, "text/html");
          var fresh = parsed.getElementById("log");
          ended = !!fresh && fresh.getAttribute("data-done") === "true";
          return readLines(after(streamUrl), false);
        })
        .then(function () {
          queueRender();
          if (ended) finish();
          else if (count + 1 >= STREAM_EVERY) follow();
          else poll(count + 1);
        })
        .catch(function () {
          poll(count + 1);
        });
    }, POLL_MS);
  }

  // Reads the JSON lines at `url` into the log as they arrive (saying so when `loading`).
  function readLines(url, loading) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/x-ndjson" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              if (buffer.trim()) add(JSON.parse(buffer));
              return;
            }
            buffer += decoder.decode(chunk.value, { stream: true });
            var parts = buffer.split("\n");
            buffer = parts.pop();
            for (var i = 0; i < parts.length; i++) {
              if (parts[i]) add(JSON.parse(parts[i]));
            }
            if (loading) setState("Loading · " + lineCount() + " lines");
            queueRender();
            return pump();
          });
        }
        return pump();
      });
  }

  function load() {
    readLines(streamUrl, true)
      .then(function () {
        readHash();
        queueRender();
        if (finished) {
          setState("Complete · " + lineCount() + " lines");
        } else {
          follow();
        }
      })
      .catch(function (error) {
        setState("Could not load the log (" + error.message + ")");
      });
  }

  load();
})();

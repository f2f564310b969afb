// bty UI helpers. The pages work without this file: times then show in
// UTC, and the delete button asks no confirmation.
(function () {
  "use strict";
  // Show every <time datetime> in the browser's own time zone.
  function localise(root) {
    if (!root || !root.querySelectorAll) return;
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      t.title = t.getAttribute("datetime");
      t.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
    });
  }
  // Row selections survive live swaps of their rows.
  var selected = new Set();
  function restore(root) {
    if (!root || !root.querySelectorAll) return;
    root.querySelectorAll("input.sel").forEach(function (cb) {
      if (selected.has(cb.value)) cb.checked = true;
    });
  }
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.matches && t.matches("input.sel")) {
      if (t.checked) selected.add(t.value); else selected.delete(t.value);
    }
    if (t.id === "select-all") {
      var form = t.closest("form") || document;
      form.querySelectorAll('tbody input[type="checkbox"]').forEach(function (cb) {
        cb.checked = t.checked;
        if (cb.classList.contains("sel")) {
          if (t.checked) selected.add(cb.value); else selected.delete(cb.value);
        }
      });
    }
  });
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
  document.addEventListener("htmx:load", function (e) {
    localise(e.detail.elt);
    restore(e.detail.elt);
  });
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  // Close this page's live stream when the page goes away. Chromium keeps
  // a left page's EventSource open (back/forward cache), and browsers allow
  // only six connections per server over HTTP/1.1: after a few pages every
  // request would queue behind old streams. A page restored from that cache
  // reloads to get a fresh stream.
  var sources = [];
  if (window.htmx && htmx.createEventSource) {
    var create = htmx.createEventSource;
    htmx.createEventSource = function (url) {
      var s = create(url);
      sources.push(s);
      return s;
    };
  }
  window.addEventListener("pagehide", function () {
    sources.forEach(function (s) { s.close(); });
    sources = [];
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && document.querySelector("[sse-connect]")) window.location.reload();
  });
})();

// nightcrier web UI: live updates only. Every page works without this file.
"use strict";

(function () {
  // The incident list: fetch the same page again and swap the list in place.
  function refreshList(section) {
    var seconds = parseInt(section.getAttribute("data-refresh"), 10) || 10;
    setInterval(function () {
      if (document.hidden) return;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok || response.redirected) return null;
          return response.text();
        })
        .then(function (text) {
          if (!text) return;
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("incidents");
          if (fresh) section.replaceChildren.apply(section, Array.prototype.slice.call(fresh.childNodes));
        })
        .catch(function () { /* the next tick tries again */ });
    }, seconds * 1000);
  }

  // One incident: stream the agent log while it runs; reload when the state changes.
  function followIncident(summary) {
    var status = summary.getAttribute("data-status");
    var log = document.getElementById("live-log");
    var src = log && log.getAttribute("data-src");
    if (status === "investigating" && src && window.EventSource) {
      var stream = new EventSource(src);
      var first = true;
      // every (re)connect replays the log from its start
      stream.addEventListener("open", function () { first = true; });
      stream.addEventListener("log", function (event) {
        if (first) { log.textContent = ""; first = false; }
        var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.appendChild(document.createTextNode(event.data + "\n"));
        if (atBottom) log.scrollTop = log.scrollHeight;
      });
      stream.addEventListener("end", function () {
        stream.close();
        var state = document.getElementById("live-state");
        if (state) state.textContent = "finished";
        setTimeout(function () { window.location.reload(); }, 1500);
      });
      stream.addEventListener("error", function (event) {
        // a server-sent `error` has data; a dropped connection does not and is retried
        if (event.data) {
          // e.g. no log file yet: the run has only just started; look again shortly
          stream.close();
          setTimeout(function () { window.location.reload(); }, 3000);
        }
      });
      return;
    }
    if (summary.hasAttribute("data-live")) {
      // pending or queued: look again until an agent takes it
      setInterval(function () {
        if (document.hidden) return;
        fetch(window.location.href, { credentials: "same-origin" })
          .then(function (response) { return response.ok ? response.text() : null; })
          .then(function (text) {
            if (!text) return;
            var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("summary");
            if (fresh && fresh.getAttribute("data-status") !== status) window.location.reload();
          })
          .catch(function () {});
      }, 2000);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("incidents");
    if (list && list.hasAttribute("data-refresh")) refreshList(list);
    var summary = document.getElementById("summary");
    if (summary) followIncident(summary);
  });
})();

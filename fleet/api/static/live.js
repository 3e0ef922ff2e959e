// fleet dashboard: live refresh without a build step. Every 2 s, fetch this page's live
// block (the same URL with live=1) and swap it into #live. Pages work without it.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  const live = document.getElementById("live");
  if (!live || live.dataset.live !== "on") return;

  function busy() {
    // never swap a form out from under a user who is using it
    const active = document.activeElement;
    return active && active !== document.body && live.contains(active);
  }

  async function refresh() {
    if (document.hidden || busy()) return;
    const url = new URL(window.location.href);
    url.searchParams.set("live", "1");
    try {
      const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (answer.status === 401) {
        window.location.reload(); // logged out: the page sends us to the login form
        return;
      }
      if (answer.ok) {
        live.innerHTML = await answer.text();
        live.dataset.refreshed = String(Date.now());
      }
    } catch (_err) {
      // the controller is restarting or the network is down: try again next time
    }
  }

  async function loop() {
    await refresh();
    window.setTimeout(loop, PERIOD_MS);
  }
  window.setTimeout(loop, PERIOD_MS);
})();

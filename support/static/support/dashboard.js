// Refreshes the operator dashboard in place: fetches the tiles fragment every N seconds and
// swaps it in. Served from our own static files (the admin's CSP allows only 'self').
"use strict";
(function () {
  const container = document.getElementById("dashboard");
  if (!container) {
    return;
  }
  const url = container.dataset.refreshUrl;
  const seconds = Math.max(parseInt(container.dataset.refreshSeconds, 10) || 15, 2);
  let busy = false;

  async function refresh() {
    // Leave the page alone while someone is using a form on it.
    if (busy || container.contains(document.activeElement) && document.activeElement.tagName !== "BODY") {
      return;
    }
    busy = true;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
      if (response.ok) {
        container.innerHTML = await response.text();
        container.dataset.refreshedAt = new Date().toISOString();
      } else if (response.status === 401 || response.status === 403 || response.redirected) {
        window.location.reload();
      }
    } catch (error) {
      container.dataset.refreshError = String(error);
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, seconds * 1000);
})();

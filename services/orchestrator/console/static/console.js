// The console's only script: refresh the parts of a page that change while runs are going, hide
// charts that have nothing to draw, and confirm deletions. Pages work without it.
"use strict";

const POLL_MS = 3000;

function poll(container) {
  const url = container.dataset.poll;
  const active = () => container.querySelector("[data-active]")?.dataset.active === "yes";
  if (!active()) return;
  const startStatus = container.querySelector("[data-status]")?.dataset.status;
  const timer = setInterval(async () => {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    } catch {
      return; // offline for a moment: try again on the next tick
    }
    if (response.redirected || !response.ok) return;
    const checked = new Set([...container.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value));
    container.innerHTML = await response.text();
    container.querySelectorAll("input[type=checkbox]").forEach((c) => { c.checked = checked.has(c.value); });
    const status = container.querySelector("[data-status]")?.dataset.status;
    if (startStatus && status !== startStatus && !active()) {
      location.reload(); // the run ended: its charts and tables are complete now
    }
    if (!active()) clearInterval(timer);
  }, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach(poll);
  document.querySelectorAll("img.chart").forEach((img) => {
    img.addEventListener("error", () => { img.closest("figure").hidden = true; });
  });
  document.querySelectorAll("form.confirm").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});

// The console's only script: sign in/out, drop empty filters, label buttons, live polling.
"use strict";

async function send(url, body, method) {
  // Same-origin cookie auth; the header marks the request as the console's own.
  const response = await fetch(url, {
    method: method || "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Clad-Console": "1"},
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function onLogin(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("login-error");
    try {
      await send("/console/session", {token: form.token.value});
      window.location = form.dataset.next || "/";
    } catch (e) { error.textContent = e.message; error.hidden = false; }
  });
}

function onFilters(form) {
  // Empty fields would reach the API as malformed values (since=, min_score=).
  form.addEventListener("submit", () => {
    for (const el of form.elements) if (el.name && !el.value) el.disabled = true;
  });
}

function addLabelLine(text) {
  const list = document.getElementById("labels");
  const empty = list.querySelector("[data-empty]");
  if (empty) empty.remove();
  const li = document.createElement("li");
  li.textContent = text;
  list.appendChild(li);
}

function onLabels(box) {
  const url = `/api/v1/verdicts/${box.dataset.verdict}/labels`;
  const status = document.getElementById("label-status");
  const post = async (body) => {
    try {
      const row = await send(url, body);
      status.textContent = `Saved: ${row.label} by ${row.author}`;
      addLabelLine(`${row.label}${row.description ? ": " + row.description : ""} by ${row.author}`);
    } catch (e) { status.textContent = `Not saved: ${e.message}`; }
  };
  box.querySelectorAll("[data-label]").forEach((b) =>
    b.addEventListener("click", () => post({label: b.dataset.label})));
  // The choice offers the product's own kinds and the generic ones, or a new word.
  const dialog = document.getElementById("fix-dialog");
  if (!dialog) return;
  const kind = document.getElementById("fix-kind");
  const other = document.getElementById("fix-other");
  kind.addEventListener("change", () => { other.hidden = kind.value !== ""; });
  document.getElementById("fix-cancel").addEventListener("click", () => dialog.close("cancel"));
  document.querySelectorAll("[data-fix-region]").forEach((b) =>
    b.addEventListener("click", () => {
      dialog.dataset.region = b.dataset.fixRegion;
      document.getElementById("fix-which").textContent = b.closest("li").dataset.index || "";
      dialog.returnValue = "";
      dialog.showModal();
    }));
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "save") return;
    const text = (kind.value || other.value).trim();
    if (text) post({label: "description", region_id: Number(dialog.dataset.region), description: text});
  });
}

function pollLive(grid) {
  // A full reload every few seconds keeps the page server-rendered and simple.
  const stamp = document.getElementById("live-updated");
  stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
  setTimeout(() => window.location.reload(), 5000);
}

function onAlarms() {
  // Acknowledge from the banner or the alarms page; the banner goes once all are acknowledged.
  document.querySelectorAll("[data-ack]").forEach((b) => b.addEventListener("click", async () => {
    try {
      const alarm = await send(`/api/v1/alarms/${b.dataset.ack}/acknowledge`);
      document.querySelectorAll(`#alarm-banner [data-alarm="${alarm.id}"]`).forEach((el) => el.remove());
      const banner = document.getElementById("alarm-banner");
      if (banner && !banner.querySelector("[data-alarm]")) banner.remove();
      b.replaceWith(document.createTextNode(`${alarm.acknowledged_by}, ${alarm.acknowledged_at.slice(0, 16).replace("T", " ")}`));
    } catch (e) { b.textContent = `Not acknowledged: ${e.message}`; }
  }));
  const form = document.getElementById("rule-form");
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("rule-error");
    try {
      await send("/api/v1/alarm-rules", {
        name: form.name.value, scope: form.scope.value, target: form.target.value,
        max_rate: Number(form.max_rate.value) / 100, window_minutes: Number(form.window_minutes.value),
        min_verdicts: Number(form.min_verdicts.value)});
      window.location.reload();
    } catch (e) { error.textContent = e.message; error.hidden = false; }
  });
  document.querySelectorAll("[data-toggle-rule]").forEach((b) => b.addEventListener("click", async () => {
    await send(`/api/v1/alarm-rules/${b.dataset.toggleRule}`, {enabled: !b.dataset.enabled}, "PATCH");
    window.location.reload();
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  onAlarms();
  const login = document.getElementById("login-form");
  if (login) onLogin(login);
  const filters = document.getElementById("filters");
  if (filters) onFilters(filters);
  const labels = document.querySelector(".label-buttons");
  if (labels) onLabels(labels);
  const live = document.getElementById("live");
  if (live) pollLive(live);
  document.querySelectorAll("[data-logout]").forEach((b) => b.addEventListener("click", async () => {
    await send("/console/logout");
    window.location = "/login";
  }));
});

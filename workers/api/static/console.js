// The console's shared script: sign in/out, filters, the description dialog, label buttons,
// alarms. Page-specific parts live in live.js, trends.js and review.js.
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
  const error = document.getElementById("login-error");
  const signIn = async (body) => {
    try {
      await send("/console/session", body);
      window.location = form.dataset.next || "/";
    } catch (e) { error.textContent = e.message; error.hidden = false; }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    signIn({username: form.username.value, password: form.password.value});
  });
  document.getElementById("token-submit").addEventListener("click", () =>
    signIn({token: form.token.value}));
}

function onFilters(form) {
  form.addEventListener("submit", () => {
    for (const el of form.elements) {
      // Empty fields would reach the API as malformed values (since=, min_relative=).
      if (el.name && !el.value) el.disabled = true;
      // A comma decimal ("0,5") is what many keyboards type: the API reads a dot.
      else if (el.inputMode === "decimal") el.value = el.value.trim().replace(",", ".");
    }
  });
}

// After a label the page reloads to show the latest word everywhere; the status survives.
function reloadWith(message) {
  sessionStorage.setItem("clad-status", message);
  window.location.reload();
}

function showKeptStatus(element) {
  const message = sessionStorage.getItem("clad-status");
  if (message && element) element.textContent = message;
  sessionStorage.removeItem("clad-status");
}

// The one description dialog: the product's kinds, the generic ones or a new word, and the
// unnamed regions that look alike as thumbnails, all ticked, to name together.
// Resolves to {labels, regionIds} once saved, or null when cancelled.
async function describeRegion({regionId, verdictId, product, index}) {
  const dialog = document.getElementById("fix-dialog");
  const choices = [...dialog.querySelectorAll(".kind-choice")];
  const choice = choices.find((c) => c.dataset.product === product) || choices[0];
  choices.forEach((c) => { c.hidden = c !== choice; });
  const other = document.getElementById("fix-other");
  other.value = "";
  other.hidden = choice.value !== "";
  choice.onchange = () => { other.hidden = choice.value !== ""; };
  document.getElementById("fix-which").textContent = index || "";
  document.getElementById("fix-product").textContent = product ? `(${product})` : "";
  const group = document.getElementById("fix-group");
  const thumbs = document.getElementById("fix-group-thumbs");
  const count = document.getElementById("fix-group-count");
  const apply = document.getElementById("fix-group-apply");
  thumbs.replaceChildren();
  group.hidden = true;
  apply.checked = true;
  const ticked = () => [...thumbs.querySelectorAll("input:checked")].map((i) => Number(i.value));
  const recount = () => { count.textContent = String(ticked().length); };
  try {
    const alike = await (await fetch(`/api/v1/regions/${regionId}/similar`,
                                     {credentials: "same-origin"})).json();
    if (Array.isArray(alike) && alike.length) {
      alike.forEach((r) => {
        const label = document.createElement("label");
        label.className = "alike-region";
        label.title = `${r.text || "undescribed"} · verdict ${r.verdict_id} · similarity ${r.similarity.toFixed(2)}`;
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = String(r.region_id);
        box.checked = true;
        box.addEventListener("change", recount);
        const img = document.createElement("img");
        img.src = `${r.thumbnail}?max_side=96`;
        img.alt = `region ${r.region_id}`;
        img.className = "thumb";
        label.append(box, img);
        thumbs.appendChild(label);
      });
      recount();
      group.hidden = false;
    }
  } catch (e) { /* no group offered: the region is still described on its own */ }
  dialog.returnValue = "";
  dialog.showModal();
  const returned = await new Promise((resolve) => {
    document.getElementById("fix-cancel").onclick = () => dialog.close("cancel");
    dialog.addEventListener("close", () => resolve(dialog.returnValue), {once: true});
  });
  const text = (choice.value || other.value).trim();
  if (returned !== "save" || !text) return null;
  const regionIds = [regionId, ...(apply.checked && !group.hidden ? ticked() : [])];
  if (regionIds.length === 1) {
    const row = await send(`/api/v1/verdicts/${verdictId}/labels`,
                           {label: "description", region_id: regionId, description: text});
    return {labels: [row], regionIds};
  }
  return {labels: await send("/api/v1/region-labels", {region_ids: regionIds, description: text}),
          regionIds};
}

function onVerdictPage(box) {
  const url = `/api/v1/verdicts/${box.dataset.verdict}/labels`;
  const status = document.getElementById("label-status");
  showKeptStatus(status);
  box.querySelectorAll("[data-label]").forEach((b) => b.addEventListener("click", async () => {
    try {
      const row = await send(url, {label: b.dataset.label});
      reloadWith(`Saved: ${row.label} by ${row.author}`);
    } catch (e) { status.textContent = `Not saved: ${e.message}`; }
  }));
  document.querySelectorAll("[data-fix-region]").forEach((b) => b.addEventListener("click", async () => {
    const li = b.closest("li");
    try {
      const saved = await describeRegion({regionId: Number(b.dataset.fixRegion),
                                          verdictId: li.dataset.verdict,
                                          product: li.dataset.product, index: li.dataset.index});
      if (saved) {
        const first = saved.labels[0];
        const more = saved.labels.length > 1 ? ` and ${saved.labels.length - 1} similar regions` : "";
        reloadWith(`Saved: description “${first.description}” by ${first.author}${more}`);
      }
    } catch (e) { status.textContent = `Not saved: ${e.message}`; }
  }));
}

function onAlarms() {
  // Acknowledge from the banner or the alarms page; the banner goes once all are acknowledged.
  document.querySelectorAll("[data-ack]").forEach((b) => b.addEventListener("click", async () => {
    try {
      const alarm = await send(`/api/v1/alarms/${b.dataset.ack}/acknowledge`);
      document.querySelectorAll(`#alarm-banner [data-alarm="${alarm.id}"]`).forEach((el) => el.remove());
      const banner = document.getElementById("alarm-banner");
      if (banner && !banner.querySelector("[data-alarm]")) banner.remove();
      b.replaceWith(document.createTextNode(`${alarm.acknowledged_by}, ${alarm.acknowledged_at.slice(0, 16).replace("T", " ")} UTC`));
    } catch (e) { b.textContent = `Not acknowledged: ${e.message}`; }
  }));
  const form = document.getElementById("rule-form");
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("rule-error");
    try {
      await send("/api/v1/alarm-rules", {
        name: form.name.value, scope: form.scope.value, target: form.target.value,
        max_rate: Number(form.max_rate.value.replace(",", ".")) / 100,
        window_minutes: Number(form.window_minutes.value),
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
  if (labels) onVerdictPage(labels);
  document.querySelectorAll("[data-logout]").forEach((b) => b.addEventListener("click", async () => {
    await send("/console/logout");
    window.location = "/login";
  }));
});

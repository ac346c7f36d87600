// Review queue: one keystroke per verdict. Labels go to the same route as the verdict page.
"use strict";

function reviewQueue(table) {
  const status = document.getElementById("review-status");
  const waiting = document.getElementById("review-waiting");
  const rows = () => [...table.querySelectorAll("tbody tr[data-verdict]")];
  const selected = () => table.querySelector("tbody tr.selected");
  const select = (row) => {
    rows().forEach((r) => r.classList.remove("selected"));
    if (row) { row.classList.add("selected"); row.scrollIntoView({block: "nearest"}); }
  };
  const move = (step) => {
    const all = rows();
    const at = all.indexOf(selected());
    select(all[Math.min(all.length - 1, Math.max(0, at + step))]);
  };

  async function label(row, key) {
    const verdict = row.dataset.verdict;
    let body;
    if (key === "a") body = {label: "anomalous"};
    else if (key === "n") body = {label: "normal"};
    else if (key === "d") {
      if (!row.dataset.region) { status.textContent = "This verdict has no region to describe."; return; }
      const text = window.prompt("Correct description of region 1:", row.dataset.description);
      if (!text) return;
      body = {label: "description", region_id: Number(row.dataset.region), description: text};
    } else return;
    try {
      const saved = await send(`/api/v1/verdicts/${verdict}/labels`, body);
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      waiting.textContent = String(Math.max(0, Number(waiting.textContent) - 1));
      select(next && next.dataset.verdict ? next : rows()[0]);
      status.textContent = `Verdict ${verdict}: ${saved.label} by ${saved.author}`;
    } catch (e) { status.textContent = `Verdict ${verdict} not saved: ${e.message}`; }
  }

  table.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-verdict]");
    if (!row) return;
    select(row);
    const button = event.target.closest("button[data-key]");
    if (button) label(row, button.dataset.key);
  });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, select, textarea")) return;
    const key = event.key.toLowerCase();
    if (key === "arrowdown" || key === "j") { move(1); event.preventDefault(); }
    else if (key === "arrowup" || key === "k") { move(-1); event.preventDefault(); }
    else if (["a", "n", "d"].includes(key) && selected()) { event.preventDefault(); label(selected(), key); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("review");
  if (table && table.dataset.canLabel) reviewQueue(table);
});

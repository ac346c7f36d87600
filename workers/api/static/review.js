// Review queue: one keystroke per verdict. Labels go to the same routes as the verdict page,
// and D opens the verdict page's description dialog (with the regions that look alike).
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
  let busy = false;  // one dialog or request at a time: keys typed meanwhile are ignored

  // Rows whose regions (or the row itself) just got a label leave the queue.
  function drop(done, regionIds) {
    const gone = rows().filter((r) => done.includes(r.dataset.verdict) || r.dataset.regions
      .split(",").some((id) => regionIds.includes(Number(id))));
    const at = rows().indexOf(selected());
    gone.forEach((r) => r.remove());
    waiting.textContent = String(Math.max(0, Number(waiting.textContent) - gone.length));
    const left = rows();
    select(left[Math.min(Math.max(at, 0), left.length - 1)]);
  }

  async function label(row, key) {
    const verdict = row.dataset.verdict;
    const url = `/api/v1/verdicts/${verdict}/labels`;
    try {
      if (key === "a" || key === "n") {
        const saved = await send(url, {label: key === "a" ? "anomalous" : "normal"});
        drop([verdict], []);
        status.textContent = `Verdict ${verdict}: ${saved.label} by ${saved.author}`;
      } else if (key === "c") {
        if (!row.dataset.confirm) { status.textContent = "The describer named no single kind here: describe it (D)."; return; }
        const saved = await send(url, {label: "description", region_id: Number(row.dataset.region),
                                       description: row.dataset.confirm});
        drop([verdict], [Number(row.dataset.region)]);
        status.textContent = `Verdict ${verdict}: “${saved.description}” confirmed by ${saved.author}`;
      } else if (key === "d") {
        if (!row.dataset.region) { status.textContent = "This verdict has no region to describe."; return; }
        const saved = await describeRegion({regionId: Number(row.dataset.region), verdictId: verdict,
                                            product: row.dataset.product, index: 1});
        if (!saved) return;
        drop([verdict], saved.regionIds);
        const more = saved.regionIds.length > 1 ? ` and ${saved.regionIds.length - 1} similar regions` : "";
        status.textContent = `Verdict ${verdict}: “${saved.labels[0].description}”${more} by ${saved.labels[0].author}`;
      }
    } catch (e) { status.textContent = `Verdict ${verdict} not saved: ${e.message}`; }
  }

  async function run(row, key) {
    if (busy) return;
    busy = true;
    try { await label(row, key); } finally { busy = false; }
  }

  table.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-verdict]");
    if (!row) return;
    select(row);
    const button = event.target.closest("button[data-key]");
    if (button) run(row, button.dataset.key);
  });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || busy) return;
    if (event.target.closest("input, select, textarea, dialog")) return;
    const key = event.key.toLowerCase();
    if (key === "arrowdown" || key === "j") { move(1); event.preventDefault(); }
    else if (key === "arrowup" || key === "k") { move(-1); event.preventDefault(); }
    else if (["a", "n", "c", "d"].includes(key) && selected()) { event.preventDefault(); run(selected(), key); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("review");
  if (table && table.dataset.canLabel) reviewQueue(table);
});

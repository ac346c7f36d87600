// Live page: sparklines of each camera's defect rate over the last hour (Chart.js, vendored),
// and the grid refreshed in place every few seconds by fetch (no page reload).
"use strict";

function drawSparks(grid) {
  window.cladCharts = window.cladCharts || {};
  Object.values(window.cladCharts.live || {}).forEach((c) => c.destroy());
  window.cladCharts.live = {};
  grid.querySelectorAll("canvas[data-spark]").forEach((canvas) => {
    const series = JSON.parse(canvas.dataset.series);
    window.cladCharts.live[canvas.dataset.spark] = new Chart(canvas, {
      type: "line",
      data: {labels: series.labels, datasets: [{label: "% anomalous", data: series.rates,
             borderColor: "#c62828", backgroundColor: "#c62828", pointRadius: 2, spanGaps: true}]},
      options: {animation: false, maintainAspectRatio: false,
                plugins: {legend: {display: false}, tooltip: {callbacks: {
                  label: (item) => {
                    const n = series.counts[item.dataIndex];
                    return n ? `${item.formattedValue}% (${n[0]} of ${n[1]} verdicts)` : "";
                  }}}},
                scales: {y: {min: 0, max: 100, ticks: {maxTicksLimit: 3}},
                         x: {ticks: {maxTicksLimit: 4, font: {size: 10}}}}},
    });
  });
}

async function refreshLive(box) {
  const stamp = document.getElementById("live-updated");
  try {
    const response = await fetch(box.dataset.poll, {credentials: "same-origin"});
    if (response.status === 401) { window.location = "/login?next=/"; return; }
    if (!response.ok) throw new Error(response.statusText);
    box.innerHTML = await response.text();
    const grid = document.getElementById("live-grid");
    drawSparks(grid);
    stamp.textContent = `updated ${grid.dataset.stamp} UTC`;
    stamp.dataset.updated = grid.dataset.updated;
    box.dataset.refreshed = String(Number(box.dataset.refreshed || 0) + 1);
  } catch (e) {
    stamp.textContent = `not updated since ${stamp.dataset.updated.slice(11, 19)} UTC (${e.message})`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("live");
  if (!box) return;
  drawSparks(box);
  const every = Number(box.dataset.pollMs) || 5000;
  const tick = async () => { await refreshLive(box); setTimeout(tick, every); };
  setTimeout(tick, every);
});

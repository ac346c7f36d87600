// Trend charts (Chart.js, vendored): defect rate per key with the volume behind it and the
// alarm rules' levels, the top defect kinds stacked, one score histogram per product.
// The charts are kept on window.cladCharts so tests and people can read the plotted data.
"use strict";

// Ten colours told apart at a glance, then grey for "other".
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf",
                 "#e377c2", "#8c564b", "#bcbd22", "#393b79"];
const OTHER_COLOUR = "#9e9e9e";

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function bucketLabel(iso) {
  return iso.slice(0, 16).replace("T", " ");
}

function rateChart(canvas, points, rules) {
  const buckets = [...new Set(points.map((p) => p.bucket))].sort();
  const keys = [...new Set(points.map((p) => p.key))].sort();
  const datasets = keys.map((key, i) => {
    const byBucket = new Map(points.filter((p) => p.key === key).map((p) => [p.bucket, p]));
    return {type: "line", label: key, yAxisID: "y", order: 1,
            borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
            spanGaps: true, tension: 0.1,
            counts: buckets.map((b) => byBucket.has(b) ? [byBucket.get(b).anomalous, byBucket.get(b).total] : null),
            data: buckets.map((b) => byBucket.has(b) ? 100 * byBucket.get(b).rate : null)};
  });
  const volume = buckets.map((b) => points.filter((p) => p.bucket === b)
                                          .reduce((n, p) => n + p.total, 0));
  datasets.push({type: "bar", label: "verdicts inspected", yAxisID: "volume", order: 3,
                 backgroundColor: "rgba(120, 130, 150, 0.25)", data: volume});
  rules.filter((r) => keys.includes(r.target)).forEach((r) => {
    datasets.push({type: "line", label: `alarm “${r.name}”: ${r.target} above ${r.rate}% over ${r.window_minutes} min`,
                   yAxisID: "y", order: 0, borderColor: PALETTE[keys.indexOf(r.target) % PALETTE.length],
                   borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0, rule: r.name,
                   data: buckets.map(() => r.rate)});
  });
  return new Chart(canvas, {data: {labels: buckets.map(bucketLabel), datasets},
    options: {animation: false, maintainAspectRatio: false, interaction: {mode: "index", intersect: false},
              plugins: {legend: {position: "bottom"}, tooltip: {callbacks: {label: (item) => {
                const d = item.dataset;
                if (d.yAxisID === "volume") return `${item.formattedValue} verdicts inspected`;
                if (d.rule) return d.label;
                const n = d.counts[item.dataIndex];
                return n ? `${d.label}: ${item.formattedValue}% (${n[0]} of ${n[1]})` : `${d.label}: no verdicts`;
              }}}},
              scales: {y: {min: 0, max: 100, title: {display: true, text: "% anomalous"}},
                       volume: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                                title: {display: true, text: "verdicts"}}}}});
}

function kindsChart(canvas, points, axis) {
  // On the rate chart's buckets, so a bucket without defects shows as zero, not missing.
  const buckets = [...new Set([...axis, ...points.map((p) => p.bucket)])].sort();
  const totals = new Map();
  const labels = new Map();
  points.forEach((p) => {
    totals.set(p.description, (totals.get(p.description) || 0) + p.verdicts);
    labels.set(p.description, p.label || p.description);
  });
  // Most verdicts first, "other" always last.
  const kinds = [...totals.keys()].sort((a, b) => (a === "other") - (b === "other")
                                                  || totals.get(b) - totals.get(a) || a.localeCompare(b));
  let colour = 0;
  const datasets = kinds.map((kind) => {
    const byBucket = new Map(points.filter((p) => p.description === kind)
                                   .map((p) => [p.bucket, p.verdicts]));
    return {label: labels.get(kind), kind,
            backgroundColor: kind === "other" ? OTHER_COLOUR : PALETTE[colour++ % PALETTE.length],
            data: buckets.map((b) => byBucket.get(b) || 0)};
  });
  return new Chart(canvas, {type: "bar", data: {labels: buckets.map(bucketLabel), datasets},
    options: {animation: false, maintainAspectRatio: false,
              plugins: {legend: {position: "right"}},
              scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true,
                                               title: {display: true, text: "verdicts"}}}}});
}

function scoresChart(canvas, h) {
  const centre = (i) => (h.edges[i] + h.edges[i + 1]) / 2;
  const bars = (counts) => counts.map((n, i) => ({x: centre(i), y: n}));
  const top = Math.max(1, ...h.normal.map((n, i) => n + h.anomalous[i]));
  const datasets = [
    {type: "bar", label: "normal", backgroundColor: "#2e7d32", data: bars(h.normal),
     barPercentage: 1, categoryPercentage: 1, grouped: false, order: 2},
    {type: "bar", label: "anomalous", backgroundColor: "#c62828", data: bars(h.anomalous),
     barPercentage: 1, categoryPercentage: 1, grouped: false, order: 2},
  ];
  if (h.threshold !== null) {
    datasets.push({type: "line", label: `threshold ${h.threshold.toFixed(3)}`,
                   borderColor: "#1d2330", borderDash: [6, 4], borderWidth: 2, pointRadius: 0,
                   stack: "threshold", order: 1,
                   data: [{x: h.threshold, y: 0}, {x: h.threshold, y: top}]});
  }
  return new Chart(canvas, {data: {datasets}, options: {animation: false,
    maintainAspectRatio: false, parsing: true, plugins: {legend: {position: "bottom"}},
    scales: {x: {type: "linear", min: h.edges[0], max: h.edges[h.edges.length - 1],
                 title: {display: true, text: `${h.product}: raw anomaly score`}},
             y: {stacked: true, beginAtZero: true, title: {display: true, text: "verdicts"}}}}});
}

function histograms(box, list) {
  const charts = {};
  if (!list.length) box.innerHTML = '<p class="muted">No verdicts in this period.</p>';
  list.forEach((h) => {
    const card = document.createElement("div");
    card.className = "histogram";
    card.dataset.product = h.product;
    const title = document.createElement("h3");
    const others = h.thresholds.filter((t) => t !== h.threshold);
    title.textContent = `${h.product}` + (others.length
      ? ` (threshold changed in the period; also ${others.map((t) => t.toFixed(3)).join(", ")})` : "");
    const chartBox = document.createElement("div");
    chartBox.className = "chart-box";
    const canvas = document.createElement("canvas");
    chartBox.appendChild(canvas);
    card.append(title, chartBox);
    box.appendChild(card);
    charts[h.product] = scoresChart(canvas, h);
  });
  return charts;
}

document.addEventListener("DOMContentLoaded", async () => {
  const box = document.getElementById("trends");
  if (!box) return;
  // One query for all three: each route ignores the parameters it does not take.
  const query = box.dataset.query;
  const error = document.getElementById("trend-error");
  try {
    const [rate, kinds, scores] = await Promise.all([
      getJson(`/api/v1/aggregates/defect-rate-series?${query}`),
      getJson(`/api/v1/aggregates/defect-kinds-series?${query}&top=8`),
      getJson(`/api/v1/aggregates/score-histograms?${query}`),
    ]);
    window.cladCharts = {
      rate: rateChart(document.getElementById("chart-rate"), rate, JSON.parse(box.dataset.rules || "[]")),
      kinds: kindsChart(document.getElementById("chart-kinds"), kinds,
                        rate.map((p) => p.bucket)),
      scores: histograms(document.getElementById("score-histograms"), scores),
    };
    box.dataset.ready = "1";
  } catch (e) {
    error.textContent = `Charts could not be loaded: ${e.message}`;
    error.hidden = false;
  }
});

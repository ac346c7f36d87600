// Trend charts (Chart.js, vendored): defect rate per key, defect kinds stacked, score histogram.
// The charts are kept on window.cladCharts so tests and people can read the plotted data.
"use strict";

const PALETTE = ["#2457c5", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f",
                 "#ad1457", "#5d4037", "#455a64", "#9e9d24"];

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function bucketLabel(iso) {
  return iso.slice(0, 16).replace("T", " ");
}

function rateChart(canvas, points) {
  const buckets = [...new Set(points.map((p) => p.bucket))].sort();
  const keys = [...new Set(points.map((p) => p.key))].sort();
  const datasets = keys.map((key, i) => {
    const byBucket = new Map(points.filter((p) => p.key === key).map((p) => [p.bucket, p]));
    return {label: key, borderColor: PALETTE[i % PALETTE.length],
            backgroundColor: PALETTE[i % PALETTE.length], spanGaps: true, tension: 0.1,
            data: buckets.map((b) => byBucket.has(b) ? 100 * byBucket.get(b).rate : null)};
  });
  return new Chart(canvas, {type: "line", data: {labels: buckets.map(bucketLabel), datasets},
    options: {animation: false, maintainAspectRatio: false,
              scales: {y: {min: 0, max: 100, title: {display: true, text: "% anomalous"}}}}});
}

function kindsChart(canvas, points, axis) {
  // On the rate chart's buckets, so a bucket without defects shows as zero, not missing.
  const buckets = [...new Set([...axis, ...points.map((p) => p.bucket)])].sort();
  const kinds = [...new Set(points.map((p) => p.description))].sort();
  const datasets = kinds.map((kind, i) => {
    const byBucket = new Map(points.filter((p) => p.description === kind)
                                   .map((p) => [p.bucket, p.verdicts]));
    return {label: kind, backgroundColor: PALETTE[i % PALETTE.length],
            data: buckets.map((b) => byBucket.get(b) || 0)};
  });
  return new Chart(canvas, {type: "bar", data: {labels: buckets.map(bucketLabel), datasets},
    options: {animation: false, maintainAspectRatio: false,
              scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}}});
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
    maintainAspectRatio: false, parsing: true,
    scales: {x: {type: "linear", min: h.edges[0], max: h.edges[h.edges.length - 1],
                 title: {display: true, text: "anomaly score"}},
             y: {stacked: true, beginAtZero: true, title: {display: true, text: "verdicts"}}}}});
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
      getJson(`/api/v1/aggregates/defect-kinds-series?${query}`),
      getJson(`/api/v1/aggregates/score-histogram?${query}`),
    ]);
    window.cladCharts = {
      rate: rateChart(document.getElementById("chart-rate"), rate),
      kinds: kindsChart(document.getElementById("chart-kinds"), kinds,
                        rate.map((p) => p.bucket)),
      scores: scoresChart(document.getElementById("chart-scores"), scores),
    };
    box.dataset.ready = "1";
  } catch (e) {
    error.textContent = `Charts could not be loaded: ${e.message}`;
    error.hidden = false;
  }
});

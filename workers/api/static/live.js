// Live page sparklines: each camera's defect rate over the last hour (Chart.js, vendored).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  window.cladCharts = window.cladCharts || {};
  window.cladCharts.live = {};
  document.querySelectorAll("canvas[data-spark]").forEach((canvas) => {
    const series = JSON.parse(canvas.dataset.series);
    window.cladCharts.live[canvas.dataset.spark] = new Chart(canvas, {
      type: "line",
      data: {labels: series.labels, datasets: [{label: "% anomalous", data: series.rates,
             borderColor: "#c62828", backgroundColor: "#c62828", pointRadius: 2, spanGaps: true}]},
      options: {animation: false, maintainAspectRatio: false,
                plugins: {legend: {display: false}},
                scales: {y: {min: 0, max: 100, ticks: {maxTicksLimit: 3}},
                         x: {ticks: {maxTicksLimit: 4, font: {size: 10}}}}},
    });
  });
});

// Draws the school page's charts (absence per month, per weekday) from the numbers in each
// canvas's data-chart attribute (an attribute, not an inline script: the
// Content-Security-Policy allows no inline code).
"use strict";
(function () {
  if (typeof Chart === "undefined") return;
  const colours = { illness: "#3b7dd8", authorized: "#c9a000", unauthorized: "#c0392b" };
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    const spec = JSON.parse(canvas.dataset.chart);
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: spec.labels,
        datasets: spec.series.map(function (s) {
          return { label: s.label, data: s.data, backgroundColor: colours[s.category] || "#777" };
        }),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: spec.yLabel } },
        },
      },
    });
  });
})();

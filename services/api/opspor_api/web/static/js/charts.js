// Draws the absence-per-month chart from the numbers in the canvas's data-chart attribute
// (an attribute, not an inline script: the Content-Security-Policy allows no inline code).
"use strict";
(function () {
  const canvas = document.getElementById("month-chart");
  if (!canvas || typeof Chart === "undefined") return;
  const spec = JSON.parse(canvas.dataset.chart);
  const colours = { illness: "#3b7dd8", authorized: "#c9a000", unauthorized: "#c0392b" };
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
})();

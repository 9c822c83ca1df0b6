// Draws the monitoring chart from the JSON the page carries; without JavaScript the table
// below it shows the same numbers.
(function () {
  "use strict";
  function draw() {
    var data = document.getElementById("chart-data");
    var box = document.getElementById("chart");
    if (!data || !box || typeof uPlot === "undefined") { return; }
    var chart = JSON.parse(data.textContent);
    var names = Object.keys(chart.series);
    if (!chart.x.length || !names.length) { box.textContent = "Nothing to plot yet."; return; }
    var palette = ["#0b5cad", "#a4161a", "#1b7f3b", "#7a5b00", "#5a2d82", "#00707a"];
    var series = [{}].concat(names.map(function (name, i) {
      return { label: name, stroke: palette[i % palette.length], spanGaps: true };
    }));
    var columns = [chart.x].concat(names.map(function (name) { return chart.series[name]; }));
    var width = Math.max(Math.min(box.clientWidth || 600, 1100), 280);
    var pad = chart.window || 300;  // one window alone still gets a readable time axis
    var xRange = function (u, min, max) { return min === max ? [min - pad, max + pad] : [min, max]; };
    new uPlot({ width: width, height: 260, series: series,
                scales: { x: { time: true, range: xRange } } }, columns, box);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
}());

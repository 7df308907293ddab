// groklab report: draws the charts from the JSON block and sorts the summary table.
// Labels in the data were escaped by the Python side; this script never writes HTML
// (no innerHTML), only Plotly figures, attributes and element order.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("groklab-data").textContent);
  var TRAIN = "#d62728", VAL = "#2ca02c", NORM = "#333333";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  var CONFIG = {responsive: true, displaylogo: false};

  function line(c, key, name, color, yaxis, show, dash) {
    return {type: "scatter", mode: "lines", x: c.step, y: c[key], name: name, legendgroup: name, showlegend: show,
            line: {color: color, width: 1.6, dash: dash || "solid"}, xaxis: "x", yaxis: yaxis};
  }

  function vline(x, color, dash) {
    return {type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
            line: {color: color, width: 1, dash: dash}};
  }

  // One run: accuracy (top), loss (middle, log), weight norm (bottom) on one log-step axis.
  function runFigure(run) {
    var c = run.curves, traces = [], shapes = [], notes = [];
    if (c.train_acc) traces.push(line(c, "train_acc", "train", TRAIN, "y", true));
    if (c.val_acc) traces.push(line(c, "val_acc", "validation", VAL, "y", true));
    if (c.train_loss) traces.push(line(c, "train_loss", "train", TRAIN, "y2", false));
    if (c.val_loss) traces.push(line(c, "val_loss", "validation", VAL, "y2", false));
    if (c.param_norm) traces.push(line(c, "param_norm", "weight norm", NORM, "y3", true));
    [[run.t_train99, TRAIN, "train"], [run.t_val99, VAL, "val"]].forEach(function (t, k) {
      if (t[0] === null || t[0] <= 0) return;
      shapes.push(vline(t[0], t[1], "dot"));
      // annotations on a log axis take log10 coordinates (shapes take data values)
      notes.push({x: Math.log10(t[0]), y: 0.62 - 0.12 * k, xref: "x", yref: "paper", xanchor: "right",
                  text: t[2] + " " + run.pct + " @ " + t[0], showarrow: false, font: {size: 10, color: t[1]}});
    });
    run.phases.forEach(function (p) {
      if (p[0] <= 0) return;
      shapes.push(vline(p[0], "#555555", "dash"));
      notes.push({x: Math.log10(p[0]), y: 1, xref: "x", yref: "paper", xanchor: "left", yanchor: "bottom",
                  text: p[1], showarrow: false, font: {size: 10, color: "#555555"}});
    });
    return {data: traces, layout: {
      height: 520, margin: {l: 60, r: 20, t: 36, b: 45}, legend: {orientation: "h", x: 0, y: 1.1},
      xaxis: {type: "log", title: {text: "optimization step"}, anchor: "y3"},
      yaxis: {domain: [0.52, 1], range: [-0.02, 1.02], title: {text: "accuracy"}},
      yaxis2: {domain: [0.27, 0.48], type: "log", title: {text: "loss"}, anchor: "x"},
      yaxis3: {domain: [0, 0.22], title: {text: "weight norm"}, anchor: "x"},
      shapes: shapes, annotations: notes}};
  }

  function render(div) {
    if (div.getAttribute("data-drawn")) return;
    div.setAttribute("data-drawn", "1");
    var fig = runFigure(DATA.runs[Number(div.getAttribute("data-run"))]);
    Plotly.newPlot(div, fig.data, fig.layout, CONFIG);
  }

  function renderAll() { document.querySelectorAll("div.run-plot").forEach(render); }

  // Run charts are drawn as they come near the viewport: a page of hundreds of runs opens fast.
  function lazyRunPlots() {
    var plots = document.querySelectorAll("div.run-plot");
    if (!("IntersectionObserver" in window)) { plots.forEach(render); return; }
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { if (e.isIntersecting) { io.unobserve(e.target); render(e.target); } });
    }, {rootMargin: "800px"});
    plots.forEach(function (d) { io.observe(d); });
  }

  var OVERLAY = {accuracy: ["train_acc", "val_acc", "accuracy", "linear"],
                 loss: ["train_loss", "val_loss", "loss", "log"],
                 norm: [null, "param_norm", "weight norm", "linear"]};

  function drawOverlay() {
    var div = document.getElementById("overlay-plot");
    if (!div) return;
    var what = OVERLAY[document.getElementById("overlay-metric").value];
    var traces = [];
    document.querySelectorAll("input.pick:checked").forEach(function (box, k) {
      var run = DATA.runs[Number(box.getAttribute("data-run"))], color = PALETTE[k % PALETTE.length];
      if (what[1] && run.curves[what[1]]) traces.push(line(run.curves, what[1], run.label, color, "y", true));
      if (what[0] && run.curves[what[0]]) {
        var t = line(run.curves, what[0], run.label + " (train)", color, "y", false, "dot");
        t.legendgroup = run.label;
        traces.push(t);
      }
    });
    Plotly.react(div, traces, {
      height: 460, margin: {l: 60, r: 20, t: 20, b: 45}, legend: {orientation: "v"},
      xaxis: {type: "log", title: {text: "optimization step"}},
      yaxis: {type: what[3], title: {text: what[2] + (what[0] ? " (solid: validation, dotted: train)" : "")}}
    }, CONFIG);
  }

  function sortKey(cell, numeric) {
    var v = cell.getAttribute("data-v");
    if (!numeric) return v === null ? "" : v;
    // a missing number (never reached 99 %, no ratio) sorts after every real one
    return v === null || v === "" ? Infinity : Number(v);
  }

  function sortTable(button) {
    var th = button.parentNode, table = th.closest("table");
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a.cells[col], numeric), y = sortKey(b.cells[col], numeric), r;
      if (numeric) r = x === y ? 0 : (x === Infinity ? 1 : y === Infinity ? -1 : dir * (x - y));
      else r = dir * x.localeCompare(y, undefined, {numeric: true});
      return r || Number(a.getAttribute("data-i")) - Number(b.getAttribute("data-i"));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  document.querySelectorAll("button.sort").forEach(function (b) {
    b.addEventListener("click", function () { sortTable(b); });
  });
  document.querySelectorAll("input.pick").forEach(function (b) { b.addEventListener("change", drawOverlay); });
  var metric = document.getElementById("overlay-metric");
  if (metric) metric.addEventListener("change", drawOverlay);
  DATA.figures.forEach(function (f) {
    Plotly.newPlot(document.getElementById(f.id), f.figure.data, f.figure.layout, CONFIG);
  });
  drawOverlay();
  lazyRunPlots();
  window.groklabReport = {renderAll: renderAll, data: DATA};
  document.body.setAttribute("data-ready", "1");
})();

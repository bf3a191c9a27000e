/* Ops pages: small progressive enhancements. Every page works without this file; the
   server validates everything again. */
(function () {
  "use strict";

  // Dead letters per hour (Chart.js, vendored). The numbers are also in a table below the chart.
  function drawCharts(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn || typeof window.Chart === "undefined") return;
      var data = JSON.parse(document.getElementById(canvas.dataset.chart).textContent);
      canvas.dataset.drawn = "1";
      new window.Chart(canvas, {
        type: "bar",
        data: { labels: data.labels, datasets: [{ label: "dead letters", data: data.counts, backgroundColor: "#2156c9" }] },
        options: {
          animation: false, maintainAspectRatio: false, responsive: true,
          plugins: { legend: { display: false } },
          scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { ticks: { maxTicksLimit: 12, autoSkip: true } } }
        }
      });
    });
  }

  // JSON editor: parse on every keystroke, say what is wrong, and block submit until it parses.
  function checkJson(area) {
    var status = document.getElementById(area.id + "-status");
    var want = area.dataset.json;
    var message = "", ok = true;
    try {
      var value = JSON.parse(area.value);
      var isArray = Array.isArray(value);
      var isObject = value !== null && typeof value === "object" && !isArray;
      if (want === "array" && !isArray) { ok = false; message = "must be a JSON array, e.g. [1, 2]"; }
      if (want === "object" && !isObject) { ok = false; message = "must be a JSON object, e.g. {\"y\": 2}"; }
    } catch (e) { ok = false; message = "invalid JSON: " + e.message; }
    area.classList.toggle("invalid", !ok);
    area.setAttribute("aria-invalid", ok ? "false" : "true");
    if (status) { status.textContent = ok ? "valid JSON" : message; status.className = "json-status " + (ok ? "ok" : "bad"); }
    return ok;
  }

  function wireEditors(root) {
    root.querySelectorAll("form[data-json-form]").forEach(function (form) {
      if (form.dataset.wired) return;
      form.dataset.wired = "1";
      var areas = form.querySelectorAll("textarea[data-json]");
      var buttons = form.querySelectorAll("button[type=submit]");
      function refresh() {
        var all = true;
        areas.forEach(function (a) { all = checkJson(a) && all; });
        buttons.forEach(function (b) { b.disabled = !all; });
        return all;
      }
      areas.forEach(function (a) { a.addEventListener("input", refresh); });
      form.addEventListener("submit", function (event) { if (!refresh()) event.preventDefault(); });
      refresh();
    });
  }

  // "Check all" on the dead-letter list.
  function wireCheckAll(root) {
    root.querySelectorAll("input[data-check-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        document.querySelectorAll("input[name=ids][form='" + box.dataset.checkAll + "']").forEach(function (b) { b.checked = box.checked; });
      });
    });
  }

  function init(root) { drawCharts(root); wireEditors(root); wireCheckAll(root); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawCharts(event.target); });
})();

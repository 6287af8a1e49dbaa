// The utilization dashboard's charts: ECharts (canvas renderer) drawing the data the page
// carries in #charts[data-charts] (the same as /reports/data.json for the page's filters, so
// the report is not computed twice). The CSP forbids inline styles: tooltips are drawn on the
// canvas (renderMode "richText"), and sizes are set through the CSSOM, never a style attribute.
(function () {
  "use strict";

  var BAR_HEIGHT = 30;
  var MIN_HEIGHT = 240;
  var charts = [];

  function percentLabel(value) {
    return value === null || value === undefined ? "—" : value.toFixed(1) + " %";
  }

  function noData(text) {
    return {
      title: { text: text, left: "center", top: "middle", textStyle: { fontSize: 14, fontWeight: "normal", color: "#5b6472" } }
    };
  }

  // Horizontal bars: long names (facilities, instruments) stay readable on a phone.
  function barOption(items, field, seriesName, colour, text) {
    if (!items.length) { return noData(text.no_data); }
    var names = items.map(function (item) { return item.name; }).reverse();
    var values = items.map(function (item) { return item[field]; }).reverse();
    return {
      animation: false,
      tooltip: { trigger: "axis", renderMode: "richText", axisPointer: { type: "shadow" },
        valueFormatter: percentLabel },
      grid: { left: 8, right: 56, top: 8, bottom: 24, containLabel: true },
      xAxis: { type: "value", axisLabel: { formatter: "{value} %" } },
      yAxis: { type: "category", data: names,
        axisLabel: { width: 140, overflow: "truncate" } },
      series: [{ name: seriesName, type: "bar", data: values, itemStyle: { color: colour },
        label: { show: true, position: "right", formatter: function (p) { return percentLabel(p.value); } } }]
    };
  }

  function trendOption(trend, text) {
    if (!trend.periods.length) { return noData(text.no_data); }
    return {
      animation: false,
      tooltip: { trigger: "axis", renderMode: "richText" },
      legend: { top: 0, type: "scroll" },
      grid: { left: 8, right: 8, top: 40, bottom: 8, containLabel: true },
      xAxis: { type: "category", data: trend.periods },
      yAxis: [
        { type: "value", name: text.hours, axisLabel: { formatter: "{value} h" } },
        { type: "value", name: text.utilization, axisLabel: { formatter: "{value} %" }, splitLine: { show: false } }
      ],
      series: [
        { name: text.effective_hours, type: "line", data: trend.effective_hours, symbol: "circle" },
        { name: text.external_hours, type: "line", data: trend.external_hours, symbol: "triangle",
          lineStyle: { type: "dashed" } },
        { name: text.utilization, type: "line", yAxisIndex: 1, data: trend.utilization, symbol: "rect",
          lineStyle: { type: "dotted" } }
      ]
    };
  }

  function optionFor(kind, data) {
    var text = data.text;
    switch (kind) {
      case "utilization": return barOption(data.groups, "utilization", text.utilization, "#1f5fa8", text);
      case "sharing": return barOption(data.groups, "sharing_rate", text.sharing_rate, "#2e7d4f", text);
      case "top": return barOption(data.top, "utilization", text.utilization, "#1f5fa8", text);
      case "bottom": return barOption(data.bottom, "utilization", text.utilization, "#b3541e", text);
      case "trend": return trendOption(data.trend, text);
      default: return null;
    }
  }

  function rowsOf(kind, data) {
    if (kind === "utilization" || kind === "sharing") { return data.groups.length; }
    if (kind === "top" || kind === "bottom") { return data[kind].length; }
    return 0;
  }

  function draw(section, data) {
    section.querySelectorAll(".chart[data-chart]").forEach(function (element) {
      var kind = element.getAttribute("data-chart");
      var option = optionFor(kind, data);
      if (!option) { return; }
      var rows = rowsOf(kind, data);
      if (rows) {
        // Through the CSSOM (allowed by the CSP), not a style attribute.
        element.style.height = Math.max(MIN_HEIGHT, rows * BAR_HEIGHT + 48) + "px";
      }
      var chart = window.echarts.init(element, null, { renderer: "canvas" });
      chart.setOption(option);
      charts.push(chart);
    });
    section.classList.add("charts-ready");
  }

  function showFailure(section) {
    var message = document.createElement("p");
    message.className = "field-error";
    message.setAttribute("role", "status");
    message.textContent = section.getAttribute("data-failed") || "The charts could not be loaded.";
    section.insertBefore(message, section.children[1] || null);
  }

  function start() {
    var section = document.getElementById("charts");
    if (!section || !window.echarts) { return; }
    try {
      draw(section, JSON.parse(section.getAttribute("data-charts")));
    } catch (error) {
      showFailure(section);
      throw error;  // still reported, so a broken chart is seen, not silently skipped
    }

    var pending = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(pending);
      pending = window.setTimeout(function () {
        charts.forEach(function (chart) { chart.resize(); });
      }, 150);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

// Draws every chart of an autoprune report from the figures embedded in the page (no network).
(function () {
  "use strict";
  var figures = JSON.parse(document.getElementById("report-figures").textContent);
  var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  var drawn = [];
  document.querySelectorAll("[data-figure]").forEach(function (element) {
    var figure = figures[element.getAttribute("data-figure")];
    drawn.push(Plotly.newPlot(element, figure.data, figure.layout, config));
  });
  Promise.all(drawn).then(
    function () { document.body.setAttribute("data-ready", "true"); },
    function (error) { document.body.setAttribute("data-ready", "error: " + error); }
  );
})();

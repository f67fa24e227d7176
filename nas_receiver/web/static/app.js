// The log page: filter as you type, and follow new lines (asks the server every 5 s for
// what was written after the last byte it sent).  Other pages need no script.
"use strict";
(function () {
  var table = document.getElementById("log");
  if (!table) { return; }
  var body = table.tBodies[0];
  var level = document.getElementById("level");
  var text = document.getElementById("q");
  var follow = document.getElementById("follow");
  var levels = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
  var end = table.getAttribute("data-end");

  function shown(row) {
    var minimum = levels.indexOf(level.value);
    var rowLevel = levels.indexOf(row.cells.length > 1 ? row.cells[1].textContent : "");
    if (minimum > 0 && rowLevel >= 0 && rowLevel < minimum) { return false; }
    var needle = text.value.toLowerCase();
    return !needle || row.textContent.toLowerCase().indexOf(needle) >= 0;
  }
  function refilter() {
    for (var i = 0; i < body.rows.length; i++) {
      var row = body.rows[i];
      if (row.className === "empty") { continue; }
      row.classList.toggle("hidden", !shown(row));
    }
  }
  function add(line) {
    var row = document.createElement("tr");
    row.className = "level-" + (line.level || "more");
    [line.at, line.level, line.text].forEach(function (value, index) {
      var cell = document.createElement("td");
      cell.textContent = value;  // never HTML: log lines hold names typed by users
      if (index === 0) { cell.className = "at"; }
      if (index === 2) { cell.className = "text"; }
      row.appendChild(cell);
    });
    row.classList.toggle("hidden", !shown(row));
    var empty = body.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    body.insertBefore(row, body.firstChild);
  }
  function poll() {
    if (!follow.checked) { return; }
    fetch("?view=log.json&after=" + encodeURIComponent(end), {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        end = String(data.end);
        table.setAttribute("data-end", end);
        data.lines.slice().reverse().forEach(add);  // oldest first, each on top
      })
      .catch(function () {});
  }
  level.addEventListener("change", refilter);
  text.addEventListener("input", refilter);
  setInterval(poll, 5000);
})();

(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v !== null && v !== '' && !isNaN(v)) { return [0, parseFloat(v)]; }
    return [1, cell.textContent.toLowerCase()];
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.style.cursor = 'pointer';
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
        th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
        rows.sort(function (a, b) {
          var x = key(a.cells[i]), y = key(b.cells[i]);
          if (x[0] !== y[0]) { return x[0] - y[0]; }
          return (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0) * dir;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  var runs = document.querySelector('table.runs');
  if (runs) {
    var input = document.createElement('input');
    input.type = 'search';
    input.placeholder = 'filter runs, e.g. gpu/2_, invalid, open loop or probe';
    input.size = 40;
    var box = document.createElement('div');
    box.className = 'filter';
    box.appendChild(input);
    runs.parentNode.parentNode.insertBefore(box, runs.parentNode);
    input.addEventListener('input', function () {
      var q = input.value.toLowerCase();
      Array.prototype.forEach.call(runs.tBodies[0].rows, function (r) {
        r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  }
})();

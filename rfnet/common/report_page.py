"""The screening report's page, style and script (:mod:`rfnet.common.report` fills them in).

Kept as strings in a module so that an installed wheel carries them with no package-data rules.
``{{NAME}}`` marks what the renderer substitutes; everything from the data arrives in the
``rows`` JSON element and reaches the page through ``textContent`` only.
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>{{STYLE}}</style>
</head>
<body>
<header><h1>{{TITLE}}</h1><p class="made">page written {{MADE}}</p></header>
<section id="summary"><h2>Summary</h2>{{COUNTS}}{{MODEL}}</section>
<section id="figures"><h2>Figures</h2><div class="figs">{{FIGURES}}</div></section>
<section id="gradable"><h2>Gradable images <span class="hint">(referred first, then by vCDR; click a header to sort)</span></h2>
<div class="pager" data-for="gradable-table"></div>
<table id="gradable-table"><thead><tr>
<th data-key="t">overlay</th><th data-key="n" data-type="text">name</th><th data-key="ref">refer</th>
<th data-key="v">vCDR</th><th data-key="ve">vCDR (experts' scale)</th><th data-key="h">hCDR</th>
<th data-key="s">disc score</th></tr></thead><tbody></tbody></table>
</section>
<section id="not-gradable"><h2>Not gradable <span class="hint">(no CDR is reported for these)</span></h2>
<div class="pager" data-for="ungradable-table"></div>
<table id="ungradable-table"><thead><tr>
<th data-key="t">overlay</th><th data-key="n" data-type="text">name</th><th data-key="why" data-type="text">reason</th>
<th data-key="msg" data-type="text">why, in words</th><th data-key="s">disc score</th></tr></thead><tbody></tbody></table>
</section>
<script type="application/json" id="rows">{{DATA}}</script>
<script>{{SCRIPT}}</script>
</body>
</html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0; } h2 { font-size: 1.15em; margin-top: 1.5em; }
.made, .hint { color: #666; font-size: 0.85em; font-weight: normal; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; margin: 0.5em 0 1em; }
dt { font-weight: 600; } dd { margin: 0; }
dl.counts dd { font-size: 1.1em; }
.figs { display: flex; flex-wrap: wrap; gap: 1.5em; } figure { margin: 0; } figcaption { font-size: 0.85em; color: #444; }
table { border-collapse: collapse; margin-top: 0.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: middle; }
th { cursor: pointer; user-select: none; background: #f4f4f4; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.refer td { background: #fdecea; }
img.thumb { width: 96px; height: 96px; object-fit: contain; background: #000; display: block; }
.pager button { margin-right: 0.3em; }
"""

SCRIPT = """
(function () {
  "use strict";
  var PAGE = __PAGE_ROWS__;
  var rows = JSON.parse(document.getElementById("rows").textContent);
  function num(x) { return x === null || x === undefined ? null : x; }
  function fmt(x, d) { return x === null || x === undefined ? "" : Number(x).toFixed(d); }
  // the default order: referred first, then the vCDR, largest first
  function byDefault(a, b) {
    var ra = a.ref === 1 ? 1 : 0, rb = b.ref === 1 ? 1 : 0;
    if (ra !== rb) { return rb - ra; }
    return (num(b.v) === null ? -1 : b.v) - (num(a.v) === null ? -1 : a.v);
  }
  var tables = {
    "gradable-table": { rows: rows.filter(function (r) { return r.g === 1; }).sort(byDefault), page: 0,
      cells: function (r) { return [thumb(r), text(r.n), text(r.ref === null ? "" : (r.ref === 1 ? "yes" : "no")),
        numCell(r.v, 3), numCell(r.ve, 3), numCell(r.h, 3), numCell(r.s, 3)]; } },
    "ungradable-table": { rows: rows.filter(function (r) { return r.g !== 1; }), page: 0,
      cells: function (r) { return [thumb(r), text(r.n), text(r.why), text(r.msg), numCell(r.s, 3)]; } }
  };
  function text(s) { var td = document.createElement("td"); td.textContent = s === null ? "" : String(s); return td; }
  function numCell(x, d) { var td = text(fmt(x, d)); td.className = "num"; return td; }
  function thumb(r) {
    var td = document.createElement("td");
    if (!r.t && !r.f) { return td; }
    var a = document.createElement("a");
    if (r.f) { a.setAttribute("href", encodeURI(r.f)); a.setAttribute("target", "_blank"); }
    var img = document.createElement("img");
    img.className = "thumb"; img.setAttribute("loading", "lazy"); img.setAttribute("alt", "overlay of " + r.n);
    img.setAttribute("src", encodeURI(r.t || r.f));
    a.appendChild(img); td.appendChild(a); return td;
  }
  function draw(id) {
    var t = tables[id], body = document.querySelector("#" + id + " tbody");
    body.textContent = "";
    var start = t.page * PAGE, part = t.rows.slice(start, start + PAGE);
    part.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-name", r.n);
      if (r.ref === 1) { tr.className = "refer"; }
      t.cells(r).forEach(function (td) { tr.appendChild(td); });
      body.appendChild(tr);
    });
    var pager = document.querySelector('.pager[data-for="' + id + '"]');
    pager.textContent = "";
    var pages = Math.max(1, Math.ceil(t.rows.length / PAGE));
    var info = document.createElement("span");
    info.textContent = t.rows.length + " images" + (pages > 1 ? ", page " + (t.page + 1) + " of " + pages + " " : " ");
    pager.appendChild(info);
    if (pages > 1) {
      [["first", 0], ["previous", t.page - 1], ["next", t.page + 1], ["last", pages - 1]].forEach(function (b) {
        var btn = document.createElement("button");
        btn.textContent = b[0];
        btn.disabled = b[1] < 0 || b[1] >= pages || b[1] === t.page;
        btn.addEventListener("click", function () { t.page = b[1]; draw(id); });
        pager.appendChild(btn);
      });
    }
  }
  Object.keys(tables).forEach(function (id) {
    var ths = document.querySelectorAll("#" + id + " th");
    ths.forEach(function (th) {
      th.addEventListener("click", function () {
        var key = th.getAttribute("data-key"), isText = th.getAttribute("data-type") === "text";
        var dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
        if (isText && !th.getAttribute("aria-sort")) { dir = 1; }
        ths.forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        tables[id].rows.sort(function (a, b) {
          var x = a[key], y = b[key];
          if (x === null || x === undefined || x === "") { return 1; }
          if (y === null || y === undefined || y === "") { return -1; }
          if (isText) { return dir * String(x).localeCompare(String(y)); }
          return dir * (x - y);
        });
        tables[id].page = 0;
        draw(id);
      });
    });
    draw(id);
  });
})();
"""

// ablate's live view: polls the server's JSON and draws it. Every text from the database goes
// into the page as text (textContent), never as markup; the one exception is the report's own
// HTML section, which the server renders and escapes exactly as the static page does.
"use strict";

var POLL_MS = Number(document.body.dataset.pollMs) || 1000;
var STATUSES = ["queued", "running", "completed", "failed", "interrupted"];
var SYMBOL = {queued: "·", running: "▶", completed: "✓", failed: "✗", interrupted: "!"};

function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  (children || []).forEach(function (c) {
    node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  });
  return node;
}

function svg(tag, attrs) {
  var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  return node;
}

function getJSON(url) {
  return fetch(url, {cache: "no-store", credentials: "same-origin"}).then(function (r) {
    return r.json().then(function (body) {
      if (!r.ok) { throw new Error(body.error || r.statusText); }
      return body;
    });
  });
}

function connected(ok, text) {
  var c = document.getElementById("connection");
  c.textContent = text;
  c.className = ok ? "muted" : "v-undecided";
}

function duration(s) {
  if (s === null || s === undefined) { return "—"; }
  s = Math.round(s);
  return s >= 3600 ? Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min"
       : s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}

// ------------------------------------------------------------------ the list of experiments
function overview(main) {
  var list = el("ul", {id: "experiments", "class": "toc"}), shown = null;
  main.appendChild(el("h2", {}, ["Experiments"]));
  main.appendChild(list);
  function poll() {
    getJSON("/api/experiments").then(function (answer) {
      var found = answer.experiments;
      connected(!answer.waiting, answer.waiting ? "waiting for the database: " + answer.waiting :
                found.length ? "updated " + new Date().toLocaleTimeString() :
                "the database holds no experiment yet; waiting for one");
      if (JSON.stringify(found) === shown) { return; }  // unchanged: links stay put under the pointer
      shown = JSON.stringify(found);
      list.replaceChildren.apply(list, found.map(function (e) {
        var counts = STATUSES.filter(function (s) { return e.counts[s]; })
          .map(function (s) { return e.counts[s] + " " + s; }).join(", ");
        return el("li", {"data-experiment": e.name}, [
          el("a", {href: "/experiment/" + encodeURIComponent(e.name)}, [e.name]),
          " — " + (e.design || "") + (counts ? ": " + counts : "")]);
      }));
    }).catch(function (err) { connected(false, "waiting: " + err.message); })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
}

// ------------------------------------------------------------------ one experiment
function experiment(main, name) {
  document.getElementById("title").textContent = "— " + name;
  document.title = "ablate live: " + name;
  var state = {since: 0, runs: [], points: {}, colours: {}, version: null, reportVersion: null, loading: false};
  var counts = el("p", {id: "counts"});
  var grid = el("div", {"class": "scroll", id: "grid"});
  var curves = el("figure", {id: "curves", "data-points": "0"});
  var deltas = el("figure", {id: "deltas"});
  var failures = el("section", {id: "failures"});
  var report = el("section", {id: "report"}, [el("p", {"class": "muted"}, ["no report yet"])]);
  [el("h2", {}, ["Progress"]), counts, grid, el("h2", {}, ["Curves"]), curves, deltas, failures,
   el("h2", {}, ["Verdicts now (as ablate report says them)"]), report]
    .forEach(function (n) { main.appendChild(n); });

  function poll() {
    var known = state.version ? "&known=" + encodeURIComponent(state.version) : "";
    getJSON("/api/experiments/" + encodeURIComponent(name) + "/progress?since=" + state.since + known).then(function (p) {
      connected(true, "updated " + new Date().toLocaleTimeString());
      if (p.unchanged) {  // nothing ended, no evaluation came: only the running runs' steps moved
        state.runs.forEach(function (r) { if (p.steps[r.run_id] !== undefined) { r.step = p.steps[r.run_id]; } });
        showGrid(grid, state.runs);
        if (state.version !== state.reportVersion && !state.loading) { loadReport(state.version); }  // still being built
        return;
      }
      state.version = p.version;
      p.points.forEach(function (q) { (state.points[q[0]] = state.points[q[0]] || []).push([q[1], q[2]]); });
      state.since = p.last_id;
      main.dataset.version = p.version;  // what the report below should be built from
      state.runs = p.runs;
      state.colours = state.rankColours || p.colours;
      state.metric = p.metric;
      showCounts(counts, p);
      showGrid(grid, p.runs);
      showCurves(curves, deltas, state);
      showFailures(failures, p.failures);
      if (p.version !== state.reportVersion && !state.loading) { loadReport(p.version); }
    }).catch(function (err) { connected(false, "waiting: " + err.message); })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  function loadReport(version) {
    state.loading = true;
    getJSON("/api/experiments/" + encodeURIComponent(name) + "/report").then(function (r) {
      state.reportVersion = r.version;
      report.innerHTML = r.html;  // rendered and escaped by the server, as the static page is
      state.rankColours = r.colours;
      report.dataset.version = r.version;
    }).catch(function (err) {
      report.replaceChildren(el("p", {"class": "v-undecided"}, ["no report yet: " + err.message]));
      state.reportVersion = version;
    }).then(function () { state.loading = false; });
  }
  poll();
}

function showCounts(node, p) {
  var parts = STATUSES.map(function (s) {
    return el("span", {"class": "count " + s, id: "count-" + s}, [p.counts[s] + " " + s]);
  });
  node.replaceChildren();
  parts.forEach(function (n, i) { if (i) { node.appendChild(document.createTextNode(" · ")); } node.appendChild(n); });
  node.appendChild(document.createTextNode(" · ETA " + duration(p.eta_s)));
}

function showGrid(node, runs) {
  var seeds = [], configs = [], cell = {};
  runs.forEach(function (r) {
    if (seeds.indexOf(r.seed) < 0) { seeds.push(r.seed); }
    if (configs.indexOf(r.config) < 0) { configs.push(r.config); }
    cell[r.config + "\u0000" + r.seed] = r;
  });
  var head = el("tr", {}, [el("th", {"class": "text"}, ["configuration"])].concat(
    seeds.map(function (s) { return el("th", {}, ["seed " + s]); })));
  var rows = configs.map(function (c) {
    return el("tr", {}, [el("td", {"class": "text"}, [c])].concat(seeds.map(function (s) {
      var r = cell[c + "\u0000" + s];
      if (!r) { return el("td", {}, [""]); }
      var text = SYMBOL[r.status] + (r.status === "running" && r.step ? " " + r.step + (r.max_steps ? "/" + r.max_steps : "") : "");
      var a = el("a", {href: "/run/" + r.run_id, title: r.status}, [text]);
      return el("td", {"class": "status-" + r.status, "data-status": r.status}, [a]);
    })));
  });
  node.replaceChildren(el("table", {"class": "grid"}, [el("thead", {}, [head]), el("tbody", {}, rows)]));
}

function showFailures(node, failed) {
  node.replaceChildren();
  if (!failed.length) { return; }
  node.appendChild(el("h2", {}, ["Failures"]));
  failed.forEach(function (r) {
    node.appendChild(el("div", {"class": "failure", "data-run": String(r.run_id)}, [
      el("p", {}, [el("a", {href: "/run/" + r.run_id}, [r.config + " seed " + r.seed]), " " + r.status + ": " + (r.error || "")]),
      el("details", {}, [el("summary", {}, ["the end of its traceback"]), el("pre", {}, [r.tail || "(none stored)"])])]));
  });
}

// ------------------------------------------------------------------ curves, drawn in SVG
function series(state, delta) {
  var byRun = {};
  state.runs.forEach(function (r) { byRun[r.run_id] = r; });
  var base = {};
  state.runs.forEach(function (r) {
    if (r.config === "baseline") {
      base[r.seed] = {};
      (state.points[r.run_id] || []).forEach(function (p) { base[r.seed][p[0]] = p[1]; });
    }
  });
  return Object.keys(state.points).map(function (id) {
    var r = byRun[id];
    if (!r || (delta && (r.config === "baseline" || !base[r.seed]))) { return null; }
    var pts = state.points[id].slice().sort(function (a, b) { return a[0] - b[0]; });
    if (delta) {
      pts = pts.filter(function (p) { return base[r.seed][p[0]] !== undefined; })
        .map(function (p) { return [p[0], p[1] - base[r.seed][p[0]]]; });
    }
    return {config: r.config, colour: state.colours[r.config] || "#555", points: pts};
  }).filter(function (s) { return s && s.points.length; });
}

function showCurves(absolute, delta, state) {
  var all = series(state, false);
  var total = all.reduce(function (n, s) { return n + s.points.length; }, 0);
  absolute.dataset.points = String(total);
  draw(absolute, all, state.metric + " by step (each run; colour: configuration)", false);
  draw(delta, series(state, true), state.metric + " minus the same-seed baseline", true);
}

function draw(figure, lines, caption, zero) {
  var W = 720, H = 260, L = 64, R = 12, T = 10, B = 28;
  figure.replaceChildren();
  if (!lines.length) { return; }
  var xs = [], ys = [];
  lines.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
  if (zero) { ys.push(0); }
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
  var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  if (x1 === x0) { x1 = x0 + 1; }
  if (y1 === y0) { y1 = y0 + 1e-9; y0 -= 1e-9; }
  function X(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
  function Y(v) { return T + (y1 - v) / (y1 - y0) * (H - T - B); }
  var chart = svg("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": caption});
  chart.appendChild(svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#d7dde4"}));
  [y0, (y0 + y1) / 2, y1].forEach(function (v) {
    var t = svg("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#57606a"});
    t.textContent = Number(v.toPrecision(4)).toString();
    chart.appendChild(t);
  });
  [x0, x1].forEach(function (v) {
    var t = svg("text", {x: X(v), y: H - 8, "text-anchor": "middle", "font-size": 11, fill: "#57606a"});
    t.textContent = String(Math.round(v));
    chart.appendChild(t);
  });
  if (zero) { chart.appendChild(svg("line", {x1: L, x2: W - R, y1: Y(0), y2: Y(0), stroke: "#999", "stroke-dasharray": "4 3"})); }
  lines.forEach(function (s) {
    chart.appendChild(svg("polyline", {fill: "none", stroke: s.colour, "stroke-width": s.config === "baseline" ? 2.2 : 1.4,
      points: s.points.map(function (p) { return X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1); }).join(" "),
      "data-config": s.config}));
  });
  figure.appendChild(chart);
  var legend = el("p", {"class": "legend"});
  var seen = [];
  lines.forEach(function (s) {
    if (seen.indexOf(s.config) >= 0) { return; }
    seen.push(s.config);
    var swatch = el("span", {"class": "swatch"}, ["■ "]);
    swatch.setAttribute("style", "color:" + s.colour);
    legend.appendChild(el("span", {"class": "entry"}, [swatch, s.config]));
  });
  figure.appendChild(el("figcaption", {}, [caption]));
  figure.appendChild(legend);
}

// ------------------------------------------------------------------ one run
function runPage(main, id) {
  document.title = "ablate live: run " + id;
  var head = el("section", {id: "run"}), curve = el("figure", {id: "run-curve"});
  main.appendChild(head);
  main.appendChild(curve);
  function poll() {
    getJSON("/api/runs/" + id).then(function (v) {
      connected(true, "updated " + new Date().toLocaleTimeString());
      var r = v.run;
      document.getElementById("title").textContent = "— " + r.experiment + " / " + r.name + " seed " + r.seed;
      var rows = ["status", "error", "final_val_loss", "best_val_loss", "best_step", "wall_time_s",
                  "tokens_per_s", "peak_rss_bytes", "code_version", "hash"].filter(function (k) {
        return r[k] !== null && r[k] !== undefined; }).map(function (k) {
        return el("tr", {}, [el("th", {"class": "text"}, [k]), el("td", {"class": "text"}, [String(r[k])])]); });
      var diff = v.diff.map(function (d) {
        return el("tr", {}, Object.keys(d).map(function (k) { return el("td", {"class": "text"}, [String(d[k])]); }));
      });
      var diffHead = v.diff.length ? el("tr", {}, Object.keys(v.diff[0]).map(function (k) { return el("th", {"class": "text"}, [k]); })) : null;
      head.replaceChildren(
        el("p", {}, [el("a", {href: "/experiment/" + encodeURIComponent(r.experiment)}, ["← " + r.experiment])]),
        el("table", {}, [el("tbody", {}, rows)]),
        el("h3", {}, ["Config against its baseline"]),
        v.diff.length ? el("table", {}, [el("thead", {}, [diffHead]), el("tbody", {}, diff)]) : el("p", {}, ["no difference"]),
        el("h3", {}, ["Reproduce it"]), el("pre", {id: "command"}, [v.command]));
      draw(curve, [{config: r.name, colour: "#1f77b4", points: v.points}], v.metric + " by step", false);
      if (r.status === "running" || r.status === "queued") { setTimeout(poll, POLL_MS); }
    }).catch(function (err) { connected(false, "waiting: " + err.message); setTimeout(poll, POLL_MS); });
  }
  poll();
}

(function route() {
  var main = document.getElementById("main");
  var path = window.location.pathname;
  var m = path.match(/^\/experiment\/(.+)$/), r = path.match(/^\/run\/(\d+)$/);
  if (m) { experiment(main, decodeURIComponent(m[1])); }
  else if (r) { runPage(main, r[1]); }
  else { overview(main); }
})();

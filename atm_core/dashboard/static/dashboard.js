/* ATM dashboard: draws every page from its JSON document (embedded in the page), then polls
   the page's API document every few seconds while it is live. In a report (data-mode="report")
   nothing is polled and links to other pages are plain text. */
(function () {
  "use strict";
  var body = document.body;
  var REPORT = body.dataset.mode === "report";
  var POLL_MS = 3000;

  // -- small DOM helpers ---------------------------------------------------------------------
  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === undefined || value === null) return;
      if (key === "text") node.textContent = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    });
    return node;
  }
  function fill(id, node) {
    var target = document.getElementById(id);
    if (target) target.replaceChildren(node);
  }
  function fmt(value, digits) {
    if (value === null || value === undefined || (typeof value === "number" && isNaN(value))) return "–";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits === undefined ? 4 : digits);
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }
  // a hyperparameter: 4 significant digits, so that tol=0.00012 does not show as 0.0001 or 0
  function fmtParam(value) {
    return typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toPrecision(4))) : fmt(value);
  }
  function link(href, label) {
    return REPORT ? h("span", { text: label }) : h("a", { href: href, text: label });
  }
  function badge(status) {
    return h("span", { className: "badge " + status, text: status.replace("_", " ") });
  }
  function card(label, value, sub) {
    return h("div", { className: "card" }, [
      h("div", { className: "label", text: label }),
      h("div", { className: "value" }, [value]),
      sub ? h("div", { className: "sub" }, [sub]) : null,
    ]);
  }
  function cards(list) {
    return h("div", { className: "cards" }, list.map(function (c) { return card(c[0], c[1], c[2]); }));
  }
  // columns: [title, row -> text or node, "num"|"wrap"|"params"]
  function table(columns, rows, empty) {
    if (!rows.length) return h("p", { className: "empty", text: empty || "Nothing yet." });
    var head = h("tr", {}, columns.map(function (c) { return h("th", { className: c[2] === "num" ? "num" : null, text: c[0] }); }));
    var lines = rows.map(function (row) {
      return h("tr", {}, columns.map(function (c) {
        var value = c[1](row);
        return h("td", { className: c[2] || null }, [typeof value === "object" && value !== null ? value : fmt(value)]);
      }));
    });
    return h("table", { className: "data" }, [h("thead", {}, [head]), h("tbody", {}, lines)]);
  }
  function keyValues(pairs) {
    return h("table", { className: "kv" }, [h("tbody", {}, pairs.map(function (p) {
      return h("tr", {}, [h("th", { text: p[0] }), h("td", {}, [typeof p[1] === "object" && p[1] !== null && p[1].nodeType ? p[1] : fmt(p[1])])]);
    }))]);
  }
  function params(values) {
    var text = Object.keys(values || {}).sort().map(function (k) { return k + "=" + fmtParam(values[k]); }).join(", ");
    return h("span", { title: text, text: text.length > 160 ? text.slice(0, 157) + "…" : text });
  }
  function progress(run) {
    var pct = Math.max(0, Math.min(100, run.percent || 0));
    return h("div", { className: "progress", title: pct + "%" }, [
      h("div", { className: "bar", style: "width:" + pct + "%" }),
      h("span", { text: fmt(run.spent, 1) + " / " + run.budget + " " + run.unit }),
    ]);
  }
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  function methodMix(methods) {
    var names = Object.keys(methods).sort();
    var total = names.reduce(function (s, n) { return s + methods[n]; }, 0);
    var bar = h("div", { className: "mix" }, total ? names.map(function (n, i) {
      return h("span", { title: n + ": " + methods[n], style: "width:" + (100 * methods[n] / total) + "%;background:" + PALETTE[i % PALETTE.length] });
    }) : []);
    var ordered = Object.keys(methods).sort(function (a, b) { return methods[b] - methods[a] || (a < b ? -1 : 1); });
    return h("div", {}, [h("div", { className: "mix-text", text: ordered.map(function (n) { return n + " " + methods[n]; }).join(" · ") }), bar]);
  }

  // -- plots ---------------------------------------------------------------------------------
  function plot(key, figure) {
    var target = document.getElementById("plot-" + key);
    if (!target || !window.Plotly) return;
    var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    window.Plotly.react(target, figure.data, figure.layout, config).then(function () {
      target.dataset.drawn = "1";
    });
    if (!REPORT && !target.dataset.bound) {
      target.dataset.bound = "1";
      target.on("plotly_click", function (event) {
        var point = event.points && event.points[0];
        if (point && typeof point.customdata === "number") location.href = "/classifiers/" + point.customdata;
      });
    }
  }
  function plots(figures) {
    Object.keys(figures || {}).forEach(function (key) { plot(key, figures[key]); });
  }

  // -- pages ---------------------------------------------------------------------------------
  function datarunsTable(items) {
    return table([
      ["datarun", function (r) { return link("/dataruns/" + r.id, "#" + r.id); }],
      ["dataset", function (r) { return link("/datasets/" + r.dataset_id, r.dataset); }],
      ["status", function (r) { return badge(r.status); }],
      ["progress", progress],
      ["best", function (r) { return r.best_score === null ? "–" : fmt(r.best_score) + " " + r.metric; }, "num"],
      ["classifiers", function (r) { return r.classifiers.complete + " complete, " + r.classifiers.errored + " errored, " + r.classifiers.running + " running"; }],
      ["methods", function (r) { return methodMix(r.methods); }],
      ["created (UTC)", function (r) { return r.created_at; }],
    ], items, "No datarun yet: enter one with `atm enter_data`, `make demo`, or the form below.");
  }

  function renderDataruns(view) {
    var runs = view.dataruns || view;
    fill("dataruns", datarunsTable(runs.items));
    fill("dataruns-total", document.createTextNode(runs.total + " in the ModelHub" + (runs.total > runs.items.length ? ", newest " + runs.items.length + " shown" : "")));
  }

  function renderDatarun(view) {
    var run = view.datarun;
    var title = document.getElementById("title");
    title.replaceChildren(document.createTextNode("Datarun " + run.id + " on "), link("/datasets/" + run.dataset_id, run.dataset), document.createTextNode(" "), badge(run.status));
    var best = run.best_classifier_id === null ? "–" : link("/classifiers/" + run.best_classifier_id, fmt(run.best_score));
    var ensemble = view.ensemble;
    fill("summary", cards([
      ["progress", progress(run), run.budget_type + " budget"],
      ["best " + run.metric + " (" + run.score_target + ")", best, run.best_classifier_id === null ? "no complete classifier yet" : "classifier #" + run.best_classifier_id],
      ["ensemble", ensemble ? fmt(ensemble.cv_judgment_metric) : "–", ensemble ? "test " + fmt(ensemble.test_judgment_metric) + ", " + ensemble.members.length + " members" : "chosen when the datarun completes"],
      ["classifiers", String(run.classifiers_total), run.classifiers.complete + " complete, " + run.classifiers.errored + " errored, " + run.classifiers.running + " running" + (run.files_lost ? ", " + run.files_lost + " with files lost" : "")],
      ["search", run.selector, "tuner " + run.tuner + ", r_minimum " + run.r_minimum],
      ["methods", methodMix(run.methods)],
      ["started (UTC)", run.start_time || "not yet", run.end_time ? "ended " + run.end_time : ""],
    ]));
    var report = document.getElementById("report-link");
    if (report) report.setAttribute("href", "/dataruns/" + run.id + "/report");
    plots(view.figures);
    var board = view.leaderboard;
    fill("leaderboard-total", document.createTextNode(board.total > board.items.length ? "top " + board.items.length + " of " + board.total : board.total + " complete"));
    fill("leaderboard", table([
      ["rank", function (r) { return r.rank; }, "num"],
      ["classifier", function (r) { return link("/classifiers/" + r.classifier_id, "#" + r.classifier_id); }],
      ["method", function (r) { return r.method; }],
      ["hyperpartition", function (r) { return r.hyperpartition; }],
      [run.metric, function (r) { return r.judgment_metric; }, "num"],
      ["cv ± std", function (r) { return fmt(r.cv_judgment_metric) + " ± " + fmt(r.cv_judgment_metric_stdev); }, "num"],
      ["test", function (r) { return r.test_judgment_metric; }, "num"],
      ["seconds", function (r) { return fmt(r.seconds, 2); }, "num"],
      ["hyperparameters", function (r) { return params(r.hyperparameters); }, "params"],
    ], board.items, "No complete classifier yet."));
    fill("ensemble", ensemble ? h("div", {}, [
      h("p", { text: "Weighted average of " + ensemble.members.length + " members: " + run.metric + " " + fmt(ensemble.cv_judgment_metric) + " out of fold, " + fmt(ensemble.test_judgment_metric) + " on the test part." }),
      table([
        ["classifier", function (m) { return link("/classifiers/" + m.classifier_id, "#" + m.classifier_id); }],
        ["weight", function (m) { return m.weight; }, "num"],
        ["method", function (m) { return m.method; }],
        ["hyperpartition", function (m) { return m.hyperpartition; }],
        ["cv", function (m) { return m.cv_judgment_metric; }, "num"],
        ["test", function (m) { return m.test_judgment_metric; }, "num"],
      ], ensemble.members),
    ]) : h("p", { className: "empty", text: "The ensemble is chosen when the datarun completes." }));
    var partitions = view.hyperpartitions.slice().sort(function (a, b) { return b.classifiers - a.classifiers || a.id - b.id; });
    fill("hyperpartitions", table([
      ["hyperpartition", function (p) { return p.label; }, "wrap"],
      ["status", function (p) { return badge(p.status); }],
      ["classifiers", function (p) { return p.classifiers; }, "num"],
      ["complete", function (p) { return p.complete; }, "num"],
      ["errored", function (p) { return p.errored; }, "num"],
      ["best", function (p) { return p.best; }, "num"],
      ["mean", function (p) { return p.mean; }, "num"],
    ], partitions));
    fill("errors", table([
      ["count", function (e) { return e.count; }, "num"],
      ["kind", function (e) { return e.kind; }],
      ["message", function (e) { return e.message; }, "wrap"],
      ["methods", function (e) { return Object.keys(e.methods).map(function (m) { return m + " " + e.methods[m]; }).join(", "); }],
      ["classifiers", function (e) {
        return h("span", {}, e.classifier_ids.map(function (id, i) { return h("span", {}, [i ? ", " : "", link("/classifiers/" + id, "#" + id)]); }));
      }, "wrap"],
    ], view.errors, "No errors."));
  }

  function renderClassifier(view) {
    var c = view.classifier;
    var title = document.getElementById("title");
    title.replaceChildren(document.createTextNode("Classifier " + c.id + " (" + c.hyperpartition + ") "), badge(c.status));
    fill("summary", cards([
      ["datarun", link("/dataruns/" + c.datarun_id, "#" + c.datarun_id), "dataset " + c.dataset],
      [c.metric + " (" + c.score_target + ")", fmt(c.judgment_metric), "judgment metric"],
      ["cv", fmt(c.cv_judgment_metric) + " ± " + fmt(c.cv_judgment_metric_stdev), "mean ± std over folds"],
      ["test", fmt(c.test_judgment_metric), "on the test part"],
      ["seconds", fmt(c.seconds, 2), "start to finish: CV fits, final fit, storage"],
      ["attempts", String(c.attempts), c.host ? "on " + c.host : ""],
    ]));
    fill("notes", document.createTextNode(view.notes.join(" ")));
    plots(view.figures);
    document.querySelectorAll("figure").forEach(function (f) { f.style.display = view.heldout ? "" : "none"; });
    fill("hyperparameters", keyValues(Object.keys(c.hyperparameters || {}).sort().map(function (k) { return [k, fmtParam(c.hyperparameters[k])]; })));
    var metrics = view.metrics || [];
    var columns = metrics.length ? Object.keys(metrics[0]).map(function (key) {
      return [key, function (row) { return typeof row[key] === "number" && !Number.isInteger(row[key]) ? fmt(row[key], 4) : row[key]; }, key === "split" ? null : "num"];
    }) : [];
    fill("metrics", table(columns, metrics, "No stored metrics."));
    var download = c.status === "complete" && c.model_location && !REPORT
      ? h("a", { href: "/api/classifiers/" + c.id + "/model", text: "download classifier-" + c.id + ".pkl" }) : "–";
    fill("model", keyValues([
      ["estimator", c.estimator_class],
      ["final model (refitted on every labelled row)", c.final_model_location || "–"],
      ["its sha256", c.final_model_sha256 || "–"],
      ["model of the search (scored)", c.model_location],
      ["sha256", c.model_sha256],
      ["metrics", c.metrics_location],
      ["predictions", c.predictions_location],
      ["download", download],
    ]));
    var section = document.getElementById("error-section");
    if (section) section.style.display = c.error_message ? "" : "none";
    fill("error", document.createTextNode(c.error_message || ""));
  }

  function renderDataset(view) {
    var d = view.dataset;
    document.getElementById("title").textContent = "Dataset " + d.id + ": " + d.name;
    var features = d.features || { numeric: [], categorical: [] };
    fill("dataset", keyValues([
      ["train data", d.train_path], ["test data", d.test_path || "a split of the train data"],
      ["label column", d.class_column], ["examples", d.n_examples], ["classes", d.k_classes + ": " + d.class_labels.join(", ")],
      ["features", d.d_features + " (" + features.numeric.length + " numeric, " + features.categorical.length + " categorical)"],
      ["majority class share", d.majority], ["size", d.size_kb + " kB"], ["content sha256", d.content_hash],
      ["registered (UTC)", d.created_at],
    ]));
    fill("dataruns", datarunsTable(view.dataruns.items));
  }

  var RENDER = { dataruns: renderDataruns, datarun: renderDatarun, classifier: renderClassifier, dataset: renderDataset };

  // -- entering a datarun ----------------------------------------------------------------------
  function bindEnterForm() {
    var form = document.getElementById("enter-form");
    if (!form) return;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = document.getElementById("enter-result");
      var data = new FormData(form);
      var options = {};
      ["class_column", "metric"].forEach(function (k) { if (data.get(k)) options[k] = data.get(k); });
      if (data.get("budget")) options.budget = parseInt(data.get("budget"), 10);
      var methods = String(data.get("methods") || "").split(/[\s,]+/).filter(Boolean);
      if (methods.length) options.methods = methods;
      if (form.elements.start_flow_run) options.start_flow_run = form.elements.start_flow_run.checked;
      var file = data.get("file");
      var request;
      if (file && file.size) {
        var query = new URLSearchParams();
        Object.keys(options).forEach(function (k) {
          [].concat(options[k]).forEach(function (v) { query.append(k, String(v)); });
        });
        query.append("filename", file.name);
        request = fetch("/api/dataruns?" + query, { method: "POST", headers: { "Content-Type": "text/csv" }, body: file, credentials: "same-origin" });
      } else {
        options.train_path = data.get("train_path");
        request = fetch("/api/dataruns", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(options), credentials: "same-origin" });
      }
      result.className = "result";
      result.textContent = "entering…";
      request.then(function (answer) {
        return answer.json().then(function (json) { return { ok: answer.ok, json: json }; });
      }).then(function (reply) {
        if (!reply.ok) { result.className = "result bad"; result.textContent = reply.json.detail; return; }
        result.replaceChildren(document.createTextNode("Entered: "), h("span", {}, reply.json.datarun_ids.map(function (id, i) {
          return h("span", {}, [i ? ", " : "", link("/dataruns/" + id, "datarun " + id)]);
        })), document.createTextNode(reply.json.flow_runs.length ? " (flow run started)" : " (run `atm worker` to work on it)"));
        refresh();
      }).catch(function (error) { result.className = "result bad"; result.textContent = String(error); });
    });
  }

  // -- live updates ----------------------------------------------------------------------------
  var page = body.dataset.page;
  var current = JSON.parse(document.getElementById("atm-view").textContent);
  var render = RENDER[page];
  var indicator = document.getElementById("live");

  function show(view) {
    current = view;
    render(view);
    if (!REPORT && indicator) {
      var now = new Date();
      indicator.textContent = (view.live ? "live · updated " : "updated ") + now.toLocaleTimeString();
    }
  }
  function refresh() {
    return fetch(body.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (view) { if (view) show(view); })
      .catch(function () { if (indicator) indicator.textContent = "dashboard unreachable; retrying"; });
  }
  function poll() {
    if (REPORT || !body.dataset.poll || current.live === false) return;
    setTimeout(function () { refresh().then(poll); }, POLL_MS);
  }
  show(current);
  bindEnterForm();
  poll();
})();

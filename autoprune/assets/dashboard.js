// The autoprune service's dashboard: runs list, submit form, run page with the report's charts, live.
// Every value from the server goes into the page as text (textContent), never as markup.
(function () {
  "use strict";
  const KEY = "autoprune-token";
  const FINISHED = ["done", "failed", "cancelled", "interrupted"];
  const PLOT = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  let generation = 0;  // a new view stops the previous view's polling
  let shown = {run: null, drawn: null};  // the run on the run page and the state its charts show
  let formFilled = false;

  const $ = (id) => document.getElementById(id);
  const path = (...parts) => "/" + parts.map(encodeURIComponent).join("/");

  function node(tag, text, attributes) {
    const element = document.createElement(tag);
    if (text !== undefined && text !== null) element.textContent = String(text);
    for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
    return element;
  }

  function showError(message) {
    $("error").textContent = message || "";
    $("error").hidden = !message;
  }

  // -- the API, with the token of this tab --------------------------------------------------------------
  async function request(method, url, body, type) {
    const headers = {Authorization: "Bearer " + sessionStorage.getItem(KEY)};
    if (type) headers["Content-Type"] = type;
    const response = await fetch(url, {method: method, headers: headers, body: body});
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      route();
      throw new Error("the server refused the token: enter it again");
    }
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || "");
      throw new Error(response.status + " " + (detail || response.statusText));
    }
    return response;
  }

  const getJSON = async (url) => (await request("GET", url)).json();

  // Runs step() now and every `seconds` until the view changes.
  function every(seconds, step) {
    const mine = generation;
    const tick = async () => {
      if (mine !== generation) return;
      try {
        await step();
      } catch (error) {
        if (mine === generation) showError(error.message);
      }
      if (mine === generation) setTimeout(tick, seconds * 1000);
    };
    tick();
  }

  // -- views ------------------------------------------------------------------------------------------------
  function show(name) {
    for (const view of ["login", "runs", "run"]) $("view-" + view).hidden = view !== name;
    $("sign-out").hidden = name === "login";
  }

  function route() {
    generation += 1;
    showError("");
    if (!sessionStorage.getItem(KEY)) return show("login");
    const match = location.hash.match(/^#\/runs\/([\w.-]+)$/);
    if (match) {
      show("run");
      openRun(match[1]);
    } else {
      show("runs");
      openRuns(location.hash === "#/new");
    }
  }

  // -- runs list and submit form ------------------------------------------------------------------------------
  async function openRuns(toForm) {
    const mine = generation;
    if (!formFilled) {
      try {
        await fillForm();
      } catch (error) {
        showError(error.message);
      }
    }
    if (mine !== generation) return;  // another view was opened meanwhile
    if (toForm) $("submit").scrollIntoView();
    every(2, refreshRuns);
  }

  async function refreshRuns() {
    const runs = await getJSON("/runs");
    $("runs-table").tBodies[0].replaceChildren(...runs.reverse().map(runRow));
    $("runs-note").hidden = runs.length > 0;
    $("runs-box").hidden = runs.length === 0;
  }

  function runRow(run) {
    const head = node("th", null, {scope: "row"});
    head.append(node("a", run.id, {href: "#" + path("runs", run.id)}));
    const row = node("tr", null, {"data-run": run.id});
    row.append(head, node("td", run.model + " on " + run.dataset), statusCell(run.status),
      progressCell(run.progress), node("td", percent(run.progress.best_accuracy)),
      node("td", run.searcher, {class: "optional"}), node("td", budgetText(run.budget), {class: "optional"}),
      node("td", shortTime(run.created), {class: "optional"}));
    return row;
  }

  function statusCell(status) {
    const cell = node("td");
    cell.append(node("span", status, {class: "status", "data-status": status}));
    return cell;
  }

  function progressCell(progress) {
    const cell = node("td");
    cell.append(node("progress", null, {max: progress.total, value: progress.completed}),
      " " + progress.completed + " / " + progress.total);
    return cell;
  }

  const percent = (value) => (value === null || value === undefined ? "–" : (value * 100).toFixed(2) + " %");
  const shortTime = (iso) => String(iso || "").slice(0, 19).replace("T", " ");

  function budgetText(budget) {
    if (!budget) return "–";
    const limit = budget.fraction !== null && budget.fraction !== undefined
      ? (budget.fraction * 100).toFixed(0) + " % of unpruned" : String(budget.absolute);
    return budget.metric + " ≤ " + limit;
  }

  async function fillForm() {
    const choices = await getJSON("/choices");
    const fields = $("submit-form").elements;
    const defaults = choices.defaults;
    const options = (select, names, chosen) =>
      select.replaceChildren(...names.map((name) => new Option(name, name, false, name === chosen)));
    options(fields.model, choices.models, defaults.model);
    options(fields.dataset, choices.datasets, defaults.dataset);
    options(fields["budget-kind"], choices.budgets, defaults.budget.metric);
    options(fields.granularity, choices.granularities, defaults.granularity);
    options(fields["latency-runtime"], choices.runtimes, "eager");
    fields.export.replaceChildren(...choices.formats.map(
      (name) => new Option(name, name, defaults.export.includes(name), defaults.export.includes(name))));
    options(fields.searcher, choices.searchers, defaults.searcher);
    options(fields.executor, choices.executors, defaults.executor);
    fields["budget-value"].value = defaults.budget.fraction;
    fields.trials.value = defaults.trials;
    formFilled = true;
  }

  // The form's fields, then the JSON settings on top (they win).
  function formConfig(fields) {
    const extra = fields.extra.value.trim() ? JSON.parse(fields.extra.value) : {};
    if (extra === null || typeof extra !== "object" || Array.isArray(extra)) {
      throw new Error("more settings must be a JSON object, like {\"seed\": 1}");
    }
    const budget = {[fields["budget-kind"].value]: Number(fields["budget-value"].value)};
    if (fields["budget-kind"].value === "latency") budget.runtime = fields["latency-runtime"].value;
    const config = {
      model: fields.model.value, dataset: fields.dataset.value, budget,
      export: fields.export.selectedOptions.length
        ? Array.from(fields.export.selectedOptions, (option) => option.value) : ["eager"],
      searcher: fields.searcher.value, trials: Number(fields.trials.value), executor: fields.executor.value,
      granularity: fields.granularity.value,
    };
    if (fields.checkpoint.value) config.checkpoint = fields.checkpoint.value;
    return Object.assign(config, extra);
  }

  $("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    try {
      const response = await request("POST", "/runs", JSON.stringify(formConfig(event.target.elements)),
        "application/json");
      location.hash = "#" + path("runs", (await response.json()).id);
    } catch (error) {
      showError("not submitted: " + error.message);
    }
  });

  $("checkpoint-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    const fields = $("submit-form").elements;
    if (!file) return;
    showError("");
    try {
      const response = await request("POST", "/checkpoints?model=" + encodeURIComponent(fields.model.value), file,
        "application/octet-stream");
      fields.checkpoint.value = (await response.json()).id;
    } catch (error) {
      showError("upload refused: " + error.message);
    }
  });

  // -- one run -------------------------------------------------------------------------------------------------
  function openRun(id) {
    if (shown.run !== id) {
      for (const chart of $("charts").querySelectorAll(".chart")) Plotly.purge(chart);
      $("charts").replaceChildren();
      $("files").replaceChildren();
      $("resume-trials").value = "";
      document.body.removeAttribute("data-charts");
      shown = {run: id, drawn: null};
    }
    every(1.5, () => refreshRun(id));
  }

  async function refreshRun(id) {
    const run = await getJSON(path("runs", id));
    if (shown.run !== id) return;
    renderRun(run);
    const state = run.status + ":" + run.progress.completed;
    if (state === shown.drawn) return;
    await Promise.all([drawCharts(id), listFiles(id)]);
    if (shown.run !== id) return;
    shown.drawn = state;
    document.body.setAttribute("data-charts", state);
  }

  function renderRun(run) {
    $("run-title").textContent = "Run " + run.id + ": " + run.model + " on " + run.dataset;
    $("run-status").textContent = run.status;
    $("run-status").setAttribute("data-status", run.status);
    $("run-progress").max = run.progress.total;
    $("run-progress").value = run.progress.completed;
    $("run-count").textContent = run.progress.completed + " of " + run.progress.total + " trials";
    renderBest(run);
    $("run-searcher").textContent = run.searcher;
    $("run-budget").textContent = budgetText(run.budget);
    $("run-owner").textContent = run.owner;
    $("run-created").textContent = shortTime(run.created);
    $("run-message").textContent = run.message || "";
    $("cancel").disabled = FINISHED.includes(run.status);
    $("resume").disabled = !FINISHED.includes(run.status);
    if (!$("resume-trials").value) $("resume-trials").value = run.progress.total;
  }

  // The best by search score (the search's progress) and the trial exported after re-scoring: when the re-score
  // chose another trial, both are named with their numbers (summary.json's rescore_facts), so they cannot be confused.
  function renderBest(run) {
    const summary = run.summary;
    const facts = (summary && summary.rescore_facts) || [];
    $("run-best-label").textContent = facts.length ? facts[0][0] : "best accuracy so far";
    $("run-best").textContent = facts.length ? facts[0][1] : percent(run.progress.best_accuracy);
    $("run-exported-box").hidden = !summary;
    if (!summary) return;
    $("run-exported-label").textContent = facts.length ? facts[1][0] : "exported";
    $("run-exported").textContent = facts.length ? facts[1][1]
      : "trial " + summary.best_trial_id + ": search score " + percent(summary.search_accuracy);
  }

  async function runAction(action, body) {
    showError("");
    try {
      await request("POST", path("runs", shown.run, action), body, body ? "application/json" : undefined);
      await refreshRun(shown.run);
    } catch (error) {
      showError(action + ": " + error.message);
    }
  }

  $("cancel").addEventListener("click", () => runAction("cancel"));
  $("resume").addEventListener("click", () =>
    runAction("resume", JSON.stringify({trials: Number($("resume-trials").value)})));

  async function listFiles(id) {
    const names = await getJSON(path("runs", id, "files"));
    if (shown.run !== id) return;
    $("files").replaceChildren(...names.map((name) => {
      const button = node("button", name, {type: "button", "data-file": name});
      button.addEventListener("click", () => download(id, name).catch((error) => showError(error.message)));
      const item = node("li");
      item.append(button);
      return item;
    }));
  }

  async function download(id, name) {
    const response = await request("GET", path("runs", id, "files") + path(...name.split("/")));
    const url = URL.createObjectURL(await response.blob());
    const link = node("a", null, {href: url, download: name.split("/").pop()});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // The report's sections (autoprune.run_report), kept in order; a chart is redrawn in place (Plotly.react).
  async function drawCharts(id) {
    const data = await getJSON(path("runs", id, "charts"));
    if (shown.run !== id) return;
    $("charts-note").textContent = data.note;
    const box = $("charts");
    const keys = new Set(data.sections.map((section) => "section-" + section.key));
    for (const old of [...box.children]) {
      if (keys.has(old.id)) continue;
      old.querySelectorAll(".chart").forEach((chart) => Plotly.purge(chart));
      old.remove();
    }
    const drawn = [];
    for (const section of data.sections) {
      const [element, chart] = sectionElement(section);
      box.append(element);
      if (chart) drawn.push(Plotly.react(chart, section.figure.data, section.figure.layout, PLOT));
    }
    await Promise.all(drawn);
  }

  function sectionElement(section) {
    const element = $("section-" + section.key) || node("section", null, {id: "section-" + section.key});
    let chart = element.querySelector(".chart");
    if (chart && !section.figure) Plotly.purge(chart);
    if (!section.figure) chart = null;
    else if (!chart) chart = node("div", null, {class: "chart", id: "chart-" + section.key, "data-figure": section.key});
    const parts = [node("h2", section.title)];
    if (section.note) parts.push(node("p", section.note, {class: "note"}));
    if (chart) parts.push(chart);
    if (section.table) parts.push(tableElement(section.table));
    if (section.text !== null) parts.push(node("pre", section.text));
    element.replaceChildren(...parts);
    return [element, chart];
  }

  function tableElement(table) {
    const head = node("tr");
    head.append(...table.header.map((cell) => node("th", cell, {scope: "col"})));
    const body = node("tbody");
    for (const row of table.rows) {
      const line = node("tr");
      line.append(node("th", row[0], {scope: "row"}), ...row.slice(1).map((cell) => node("td", cell)));
      body.append(line);
    }
    const thead = node("thead");
    thead.append(head);
    const element = node("table");
    element.append(thead, body);
    const box = node("div", null, {class: "table"});
    box.append(element);
    return box;
  }

  // -- token ---------------------------------------------------------------------------------------------------
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    try {
      await getJSON("/runs");
      route();
    } catch (error) {
      showError(error.message);
    }
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    route();
  });

  window.addEventListener("hashchange", route);
  route();
})();

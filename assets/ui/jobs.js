// Failed jobs (/ui/jobs): the listing with the API's filters and paging, the error text in
// the list, and retry / delete of one job or of the whole filtered selection.
"use strict";

(() => {
  const { $, h, fill, fmt, plural, when, get, jobLink } = RQ;

  /**
   * The listing's filters, named as the API names them; passed through as they are. Every one
   * but the order is a filter of the selection, which retry-all and clear take too (issue 20).
   */
  const FILTERS = ["q", "queue", "function", "exception", "failed_after", "failed_before", "policy", "state", "order"];
  /** Parameters that shape the page, not the selection. */
  const PAGING = ["order", "limit", "offset"];

  const query = new URLSearchParams(window.location.search);
  const filters = {};
  for (const name of FILTERS) {
    const value = (query.get(name) || "").trim();
    if (value) filters[name] = value;
  }
  filters.order = filters.order || "newest";
  const limit = Math.min(Math.max(parseInt(query.get("limit"), 10) || 50, 1), 1000);
  const offset = Math.max(parseInt(query.get("offset"), 10) || 0, 0);

  // The form shows the filters in force.
  for (const [name, value] of Object.entries({ ...filters, limit })) {
    const field = $(`#filter [name=${name}]`);
    if (!field) continue;
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === String(value))) {
      field.append(h("option", { value }, value));
    }
    field.value = value;
  }

  // A preset fills in "failed after" and filters at once, keeping the other filters; the time
  // stays relative ("1h"), so a bookmark or a retry of the selection means the last hour then.
  document.querySelectorAll("#filter [data-since]").forEach((button) => {
    button.addEventListener("click", () => {
      $("#filter [name=failed_after]").value = button.dataset.since;
      $("#filter [name=failed_before]").value = "";
      $("#filter").requestSubmit();
    });
  });

  // A search in force is shown, with a link to the same listing without it.
  if (filters.q) {
    $("#searching [data-field=q]").textContent = filters.q;
    const without = new URLSearchParams(query);
    without.delete("q");
    without.delete("offset");
    $("#unsearch").href = `jobs?${without}`;
    $("#searching").hidden = false;
  }

  let total = null;

  /** The selection for retry-all / clear: the listing's filters, less the page's shape. */
  function selection() {
    const chosen = {};
    for (const [name, value] of Object.entries(filters)) {
      if (!PAGING.includes(name)) chosen[name] = value;
    }
    return chosen;
  }

  function renderSelection() {
    const buttons = document.querySelectorAll("[data-action=retry-group], [data-action=delete-group]");
    buttons.forEach((b) => { b.disabled = !total; });
  }

  /** The last line of a traceback, for the list (the exception and its message). */
  function lastLine(text) {
    const lines = (text || "").split("\n").map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines[lines.length - 1] : "";
  }

  function pageLink(node, at) {
    const target = new URLSearchParams(query);
    target.set("offset", String(at));
    node.href = `jobs?${target}`;
    node.hidden = false;
  }

  /** States never retried automatically (issue 21): why, for the badge's title. */
  const LEFT_TO_OPERATOR = {
    stopped: "RQ marks it stopped (an operator stopped it): never retried automatically; retry or delete it by hand",
    succeeded: "its last run succeeded (RQ's results): never retried automatically; retry or delete it by hand",
  };

  async function loadList() {
    const answer = await get("jobs/failed", { ...filters, limit, offset });
    if (RQ.unchanged("jobs", answer)) return;
    total = answer.total;
    const jobs = answer.jobs || [];
    fill($("#jobs tbody"), jobs.map((j) => {
      const error = j.decode_error ? `cannot be decoded: ${j.decode_error}` : lastLine(j.exc_info);
      return h("tr", { "data-job-id": j.job_id },
        h("td", { class: "job" }, jobLink(j.job_id), error ? h("div", { class: "error-line", title: error }, error) : null),
        h("td", {}, j.queue),
        h("td", {}, h("code", {}, j.func_name ?? "—")),
        h("td", {}, when(j.failed_at)),
        h("td", { class: "n", "data-field": "attempts" }, fmt(j.attempts), j.exhausted ? [" ", h("span", { class: "badge warn" }, "exhausted")] : ""),
        h("td", { "data-field": "policy" }, j.policy ?? h("span", { class: "muted" }, "(unmatched)"),
          j.state || j.decision ? h("div", { class: "muted small", "data-field": "state" }, LEFT_TO_OPERATOR[j.state]
            ? h("span", { class: "badge warn", title: LEFT_TO_OPERATOR[j.state] }, j.state)
            : j.state || j.decision) : null),
        h("td", {}, when(j.next_retry_at)),
        h("td", { class: "row-actions" },
          h("button", { type: "button", class: "small", "data-action": "retry", disabled: !!j.decode_error }, "Retry"),
          h("button", { type: "button", class: "small danger", "data-action": "delete", disabled: !!j.decode_error }, "Delete…")));
    }));
    $("#jobs-empty").hidden = jobs.length > 0;
    $("#total").textContent = `(${fmt(total)})`;
    const about = [];
    if (answer.unknown) about.push(`${plural(answer.unknown, "job")} left out: a fact the filter needs is not read yet`);
    if (answer.source) about.push(answer.source === "index" ? "from the failure index" : "read from Redis");
    fill($("#freshness"), about.join(" · "), answer.as_of ? [" as of ", when(answer.as_of)] : "");
    $("#range").textContent = jobs.length
      ? `${fmt(offset + 1)}–${fmt(offset + jobs.length)} of ${fmt(total)}`
      : `${fmt(total)} in all`;
    const prev = $("#prev");
    const next = $("#next");
    prev.hidden = offset === 0;
    if (offset > 0) pageLink(prev, Math.max(offset - limit, 0));
    next.hidden = offset + jobs.length >= total;
    if (offset + jobs.length < total) pageLink(next, offset + limit);
    renderSelection();
  }

  function bulkAction(kind) {
    return () => {
      RQ.bulk(kind, selection(), { label: "the selection", expected: total, after: loadList });
    };
  }

  /**
   * Whole tracebacks (issue 22, item 1): `q` searches what the index keeps; this reads the
   * selection's failure texts from Redis, stretch by stretch, and lists the lines that hold
   * the search, saying how far it is. The other filters choose what is read.
   */
  let deepStopped = false;
  async function searchTracebacks() {
    const params = { ...selection(), text: filters.q };
    delete params.q;
    deepStopped = false;
    $("#deep-search").disabled = true;
    $("#deep-stop").hidden = false;
    $("#deep-hits").hidden = false;
    const hits = $("#deep-hits tbody");
    hits.replaceChildren();
    let from = 0;
    let found = 0;
    try {
      while (from !== null && !deepStopped) {
        const answer = await get("jobs/traceback-search", { ...params, from });
        for (const j of answer.jobs) {
          found += 1;
          hits.append(h("tr", { "data-hit-id": j.job_id },
            h("td", { class: "job" }, jobLink(j.job_id)), h("td", {}, j.queue),
            h("td", {}, h("span", { class: "line" }, j.line))));
        }
        from = answer.next;
        $("#deep-progress").textContent =
          `${plural(found, "match", "matches")}; searched ${fmt(answer.searched_through)} of ${fmt(answer.of)}${from === null ? "" : "…"}`;
      }
    } catch (e) {
      $("#deep-progress").textContent = `search failed: ${e.message}`;
    }
    $("#deep-search").disabled = false;
    $("#deep-stop").hidden = true;
  }
  if (filters.q) {
    $("#deep").hidden = false;
    $("#deep-search").addEventListener("click", searchTracebacks);
    $("#deep-stop").addEventListener("click", () => { deepStopped = true; });
  }

  const rowId = (button) => button.closest("[data-job-id]").dataset.jobId;
  RQ.on("retry", (button) => RQ.retryJob(rowId(button), loadList));
  RQ.on("delete", (button) => RQ.deleteJob(rowId(button), loadList));
  RQ.on("retry-group", bulkAction("retry"));
  RQ.on("delete-group", bulkAction("delete"));

  RQ.start({
    load: loadList,
    sources: [loadList],
  });
})();

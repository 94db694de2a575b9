// Simulate (/ui/simulate): paste or edit a policy file, see what it would do with the failed
// jobs of now against the running policies (POST /api/v1/policies/simulate). Writes nothing.
"use strict";

(() => {
  const { $, h, fill, fmt, plural, dotted, ApiError } = RQ;
  const API = new URL("../api/v1/", document.baseURI);

  /** What an outcome does to a job, for people. */
  const OUTCOMES = {
    retry_now: "retried now",
    wait: "waiting to retry",
    exhaust: "exhausted",
    purge: "purged now",
    purge_later: "purged later",
    ignore: "ignored",
    unmatched: "unmatched",
    stopped: "stopped (left alone)",
    succeeded: "succeeded (left alone)",
    held: "held",
    undecodable: "undecodable",
  };
  const outcome = (name) => OUTCOMES[name] || name;
  const counts = (by) => Object.entries(by || {}).map(([k, n]) => `${fmt(n)} ${outcome(k)}`).join(", ") || "none";

  /** A request to the API whose answer may not be JSON; 401 shows the sign-in. */
  async function send(method, path, body) {
    let response;
    try {
      response = await fetch(new URL(path, API), {
        method,
        headers: body === undefined ? {} : { "Content-Type": "application/toml" },
        body,
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (e) {
      throw new ApiError(0, "unreachable", `rq-retryd does not answer (${e.message})`);
    }
    if (response.status === 401) {
      // RQ's own request shows the sign-in form.
      await RQ.get("whoami").catch(() => null);
      throw new ApiError(401, "unauthorized", "sign in first");
    }
    return response;
  }

  async function running() {
    const response = await send("GET", "policies/file");
    if (!response.ok) throw new ApiError(response.status, `http_${response.status}`, response.statusText);
    return response.text();
  }

  async function load() {
    const box = $("#candidate");
    if (!box.value) box.value = await running();
  }

  const name = (text) => (text ? h("code", {}, dotted(text)) : h("span", { class: "muted" }, "—"));

  function show(report) {
    $("#result").hidden = false;
    const changed = report.groups.filter((g) => g.changed > 0);
    $("#summary").textContent = `${fmt(report.changed_jobs)} of ${plural(report.jobs, "failed job")} in ${plural(report.changed_groups, "group")} would change` +
      (report.ignored_sections.length ? ` · ignored sections: ${report.ignored_sections.join(", ")}` : "");
    fill($("#changes tbody"), changed.map((g) => h("tr", { "data-group": [g.queue, g.function || "", g.exception || ""].join("|") },
      h("td", {}, h("code", {}, g.queue)),
      h("td", {}, name(g.function)),
      h("td", {}, name(g.exception)),
      h("td", { class: "n" }, fmt(g.jobs)),
      h("td", { "data-field": "running" }, counts(g.running)),
      h("td", { "data-field": "moves" }, g.moves.map((m, i) => h("div", {}, `${fmt(m.jobs)} ${outcome(m.from)} → `, h("strong", {}, outcome(m.to))))))));
    $("#no-changes").hidden = changed.length > 0;
    const because = Object.entries(report.uncertain_because).map(([k, n]) => `${fmt(n)} on ${k.replace("_", " ")}`).join(", ");
    $("#uncertain").hidden = report.uncertain === 0;
    $("#uncertain").textContent = `${plural(report.uncertain, "job")} cannot be decided from what the index holds (${because}); ${report.uncertain === 1 ? "it is" : "they are"} counted in no outcome.`;
    fill($("#candidate-policies tbody"), report.policies.map((p, i) => h("tr", { "data-policy": p.name },
      h("td", { class: "n" }, String(i + 1)),
      h("td", {}, h("strong", {}, p.name)),
      h("td", {}, h("span", { class: `badge action-${p.action}` }, p.action)),
      h("td", { class: "n" }, fmt(p.jobs)),
      h("td", {}, counts(p.outcomes)))));
  }

  async function simulate(event) {
    event.preventDefault();
    const problems = $("#problems");
    const response = await send("POST", "policies/simulate", $("#candidate").value);
    const body = await response.json().catch(() => null);
    if (response.status === 400 && body && body.code === "invalid_policy_file") {
      problems.hidden = false;
      problems.textContent = body.error;
      $("#result").hidden = true;
      return;
    }
    if (!response.ok) throw new ApiError(response.status, (body && body.code) || `http_${response.status}`, (body && body.error) || response.statusText);
    problems.hidden = true;
    show(body);
  }

  $("#simulate-form").addEventListener("submit", (event) => {
    simulate(event).catch((e) => {
      const problems = $("#problems");
      problems.hidden = false;
      problems.textContent = RQ.describe(e);
    });
  });
  $("#reset").addEventListener("click", async () => {
    $("#candidate").value = await running();
  });

  RQ.start({ load, sources: [] });
})();

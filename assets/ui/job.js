// One job (/ui/job?id=…): its facts and full traceback (jobs/status), the explain view
// (which policy decides, why the others do not, the next retry) and retry / delete.
"use strict";

(() => {
  const { $, h, fill, enc, fmt, when, get, ApiError } = RQ;
  const id = new URLSearchParams(window.location.search).get("id");
  let explained = null;
  let described = false;

  const fact = (term, field, ...value) => [h("dt", {}, term), h("dd", { "data-field": field }, value)];
  const none = (text) => h("span", { class: "muted" }, text);

  async function loadStatus() {
    let s;
    try {
      s = await get(`jobs/status/${enc(id)}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      if (RQ.unchanged("status", null)) return;
      fill($("#facts"), fact("Status", "status", none("no such job: deleted, or its TTL ran out")));
      $("#traceback").textContent = "";
      return;
    }
    if (RQ.unchanged("status", s)) return;
    fill($("#facts"),
      fact("Status", "status", s.status ?? none("unknown"), s.exhausted ? [" ", h("span", { class: "badge warn" }, "exhausted")] : ""),
      fact("Queue", "queue", s.queue ?? none("—")),
      fact("Failed registry", "failed-registry", s.failed_registry ?? none("not in one")),
      fact("Automatic attempts", "attempts", fmt(s.attempts),
        explained && explained.max_attempts !== null && explained.max_attempts !== undefined ? ` of ${fmt(explained.max_attempts)}` : ""),
      fact("Enqueued", "enqueued-at", when(s.enqueued_at)),
      fact("Started", "started-at", when(s.started_at)),
      fact("Ended", "ended-at", when(s.ended_at)));
    $("#traceback").textContent = s.exc_info ?? "(no failure text stored)";
    if (s.description) {
      described = true;
      $("#description").textContent = s.description;
    } else if (!described) {
      fill($("#description"), none("(RQ stored no description)"));
    }
  }

  async function loadExplain() {
    try {
      explained = await get(`failed-jobs/${enc(id)}/explain`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      explained = null;
      if (!RQ.unchanged("explain", null)) renderGone(e.message);
      return;
    }
    if (RQ.unchanged("explain", explained)) return;
    $("#gone").hidden = true;
    document.querySelectorAll("[data-action=retry], [data-action=delete]").forEach((b) => { b.disabled = false; });
    const e = explained;
    $("#verdicts").hidden = false;
    const decision = $("#decision");
    decision.textContent = e.decision;
    // Stopped and succeeded jobs are left to the operator: the decision says why.
    const leftToOperator = /^(stopped|succeeded):/.test(e.decision || "");
    decision.className = `badge ${e.exhausted || e.held || leftToOperator ? "warn" : ""}`;
    fill($("#explain-facts"),
      fact("Deciding policy", "policy", e.policy ?? none("none: no policy matches, the job is left alone")),
      e.held ? fact("Held", "held", e.held, none(" (requeued as soon as that clears)")) : null,
      e.requeue_to ? fact("Requeue to", "requeue-to", h("code", {}, e.requeue_to)) : null,
      fact("Next retry", "next-retry", e.next_retry_at ? when(e.next_retry_at) : none("none")),
      e.purge_at ? fact("Purge at", "purge-at", when(e.purge_at)) : null,
      fact("Function", "function", e.function ? h("code", {}, RQ.dotted(e.function)) : none("unknown")),
      fact("Exception", "exception", e.exception_type ?? none("unknown")),
      fact("Failed", "failed-at", when(e.failed_at),
        e.failed_at_from === "failed_registry" ? none(" (no ended_at: when RQ moved it to the failed registry)") : ""),
      fact("Created", "created-at", e.created_at ? when(e.created_at) : none("unknown (no readable created_at)")),
      e.max_age ? fact("Max age", "max-age", e.max_age) : null);
    fill($("#verdicts tbody"), (e.policies || []).map((p, i) => h("tr", { "data-policy": p.name, class: p.result },
      h("td", { class: "n" }, String(i + 1)),
      h("td", {}, h("strong", {}, p.name)),
      h("td", {}, p.action),
      h("td", {}, h("span", { class: `badge ${p.result === "matched" ? "ok" : ""}` }, p.result.replace("_", " "))),
      h("td", {}, p.reason ?? ""))));
  }

  /** The job is no longer failed: say so and disable the actions. */
  function renderGone(message) {
    const gone = $("#gone");
    gone.hidden = false;
    gone.textContent = `${message}. Nothing decides it now; its status is below.`;
    fill($("#explain-facts"));
    fill($("#verdicts tbody"));
    $("#verdicts").hidden = true;
    $("#decision").textContent = "not failed";
    if (!described) fill($("#description"), none("(only known while the job is failed)"));
    document.querySelectorAll("[data-action=retry], [data-action=delete]").forEach((b) => { b.disabled = true; });
  }

  const load = async () => {
    await loadExplain();
    await loadStatus();
  };

  if (!id) {
    fill($("#page"), h("section", { class: "card" }, h("p", {}, "No job id: open a job from ", h("a", { href: "jobs" }, "the failed jobs"), ".")));
    return;
  }
  $("#job-id").textContent = id;
  document.title = `Job ${id} · rq-retryd`;
  RQ.on("retry", () => RQ.retryJob(id, load));
  RQ.on("delete", () => RQ.deleteJob(id, load));
  RQ.start({ load, sources: [loadStatus, loadExplain] });
})();

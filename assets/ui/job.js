// One job (/ui/job?id=…): led by its error (the final exception's type and whole message),
// its facts and full traceback (jobs/status) shown at its end with library frames folded, its
// history (failed-jobs/{id}/history: RQ's runs and the actions on it, newest first), the
// explain view (which policy decides, why the others do not, the next retry) and retry / delete.
"use strict";

(() => {
  const { $, h, fill, enc, fmt, plural, when, get, ApiError } = RQ;
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
      showTraceback("");
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
    showTraceback(s.exc_info ?? "(no failure text stored)");
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

  /** A frame of library code: installed packages and Python's own standard library. */
  const LIBRARY = /[\\/](site-packages|dist-packages)[\\/]|[\\/]lib[\\/]python\d+(\.\d+)?[\\/]/;
  /** A frame's first line, also inside an exception group's `  | ` margin. */
  const FRAME = /^[ |]*File "([^"]*)"/;

  /**
   * The traceback as text, each run of library frames folded into a <details> whose label is
   * drawn by CSS (so the text of the box stays the traceback, byte for byte), scrolled to its
   * end where the exception is.
   */
  function showTraceback(text) {
    const box = $("#traceback");
    const lines = text.split(/(?<=\n)/);
    const parts = [];
    let folded = [];
    let frames = 0;
    let total = 0;
    const fold = () => {
      if (!folded.length) return;
      const label = `${frames} library frame${frames === 1 ? "" : "s"}`;
      parts.push(h("details", { class: "library-frames" },
        h("summary", { "data-label": label, "aria-label": label }), folded.join("")));
      total += frames;
      folded = [];
      frames = 0;
    };
    for (let i = 0; i < lines.length; i++) {
      const match = FRAME.exec(lines[i]);
      if (!match) {
        fold();
        parts.push(lines[i]);
        continue;
      }
      // The frame: its File line and the indented source and marker lines under it.
      const margin = lines[i].length - lines[i].replace(/^[ |]*/, "").length;
      let frame = lines[i];
      while (i + 1 < lines.length && !FRAME.test(lines[i + 1])
        && /^[ |]*$/.test(lines[i + 1].slice(0, margin + 2)) && lines[i + 1].trim()) {
        frame += lines[++i];
      }
      if (LIBRARY.test(match[1])) {
        folded.push(frame);
        frames += 1;
      } else {
        fold();
        parts.push(frame);
      }
    }
    fold();
    if (total) fill(box, parts);
    else box.textContent = text;
    $("#traceback-note").textContent = total ? `${total} library frames folded` : "";
    box.scrollTop = box.scrollHeight;
  }

  /** What each kind of history event is called on the page. */
  const KINDS = {
    failed_run: "Failed",
    succeeded_run: "Succeeded",
    stopped_run: "Stopped",
    retried_run: "Failed; RQ's Retry ran it again",
    retries_exceeded_run: "Failed; RQ's Retry used up",
    unreadable_run: "Result unreadable",
    requeue: "Requeued by rq-retryd",
    operator_retry: "Retried by an operator",
    purge: "Purged by rq-retryd",
    operator_delete: "Deleted by an operator",
    marked_exhausted: "Marked exhausted",
  };
  const RUNS = new Set(["failed_run", "stopped_run", "retried_run", "retries_exceeded_run"]);

  /** The page's header: the newest failure's final exception, type and whole message. */
  function showError(events) {
    const failure = events.find((e) => RUNS.has(e.kind) && (e.exc_type || e.message));
    $("#error").hidden = !failure;
    if (!failure) return;
    fill($("#error [data-field=exc-type]"), failure.exc_type ? RQ.dotted(failure.exc_type) : "Exception");
    $("#error [data-field=exc-message]").textContent =
      (failure.message || "(no message)") + (failure.message_truncated ? " …" : "");
  }

  function historyItem(e) {
    const who = e.who ? h("span", { class: "who" }, e.source === "audit" ? `by ${e.who}` : `on ${e.who}`) : null;
    const why = e.why ? h("span", { class: "muted" }, ` (${e.why})`) : null;
    const exception = e.exc_type || e.message
      ? h("div", { class: "event-exception" },
        e.exc_type ? h("strong", { class: "exc" }, RQ.dotted(e.exc_type)) : null,
        e.message ? `: ${e.message}${e.message_truncated ? " …" : ""}` : "")
      : null;
    return h("li", { "data-kind": e.kind, "data-source": e.source },
      h("div", { class: "event-head" },
        when(e.at), " ",
        h("strong", { class: "event-kind" }, KINDS[e.kind] || `Action ${e.action}`), " ",
        who, why,
        e.count > 1 ? none(` · one of ${fmt(e.count)} jobs`) : null),
      exception,
      e.unreadable ? h("div", { class: "warning" }, e.unreadable) : null);
  }

  async function loadHistory() {
    let history;
    try {
      history = await get(`failed-jobs/${enc(id)}/history`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      history = { events: [], notes: [], audit_searched: 0 };
    }
    if (RQ.unchanged("history", history)) return;
    showError(history.events);
    fill($("#history"), history.events.length
      ? history.events.map(historyItem)
      : h("li", { class: "muted" }, "Nothing recorded: no results from RQ and no action in the audit."));
    $("#history-note").textContent = [
      `newest first · ${plural(history.audit_searched, "audit entry", "audit entries")} searched`,
      ...history.notes,
    ].join(" · ");
  }

  // The history (which leads the page with the error) is asked beside explain and status, not
  // after them; status waits for explain, whose max_attempts it shows.
  const load = async () => {
    await Promise.all([loadExplain().then(loadStatus), loadHistory()]);
  };

  if (!id) {
    fill($("#page"), h("section", { class: "card" }, h("p", {}, "No job id: open a job from ", h("a", { href: "jobs" }, "the failed jobs"), ".")));
    return;
  }
  $("#job-id").textContent = id;
  document.title = `Job ${id} · rq-retryd`;
  RQ.on("retry", () => RQ.retryJob(id, load));
  RQ.on("delete", () => RQ.deleteJob(id, load));
  RQ.start({ load, sources: [loadStatus, loadExplain, loadHistory] });
})();

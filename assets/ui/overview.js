// Overview (/ui/): the failures per minute and per hour, per-queue counts, the supervisor's
// state and switches, the failure groups with their group actions. Live refresh takes the
// four sources in turn, one per tick.
"use strict";

(() => {
  const { $, h, fill, enc, fmt, plural, when, get, call } = RQ;
  let stats = null;
  let supervisor = null;
  let groupsAnswer = null;
  let timeline = null;
  /** Each policy's action (retry, purge, ignore) by name, to tell a retry from a purge. */
  let actions = new Map();

  const loadStats = async () => {
    stats = await get("jobs/stats");
    if (!RQ.unchanged("stats", stats)) renderQueues();
  };
  const loadSupervisor = async () => {
    supervisor = await get("supervisor");
    if (!RQ.unchanged("supervisor", supervisor)) supervisorChanged();
  };
  /** Paused or not also decides whether the groups' next actions count down. */
  const supervisorChanged = () => {
    renderSupervisor();
    renderQueues();
    if (groupsAnswer) renderGroups(groupsAnswer);
  };
  /**
   * The policies' actions, read once with the page's first load (a live tick sends one
   * request): they change only with a reload of the config, which a page load picks up.
   */
  let policiesRead = null;
  const loadPolicies = () => {
    policiesRead = policiesRead || get("policies").then((answer) => {
      actions = new Map((answer.policies || []).map((p) => [p.name, p.action]));
    }, () => {
      policiesRead = null; // asked again next time; meanwhile every next action shows as a retry
    });
    return policiesRead;
  };
  const loadGroups = async () => {
    const [answer] = await Promise.all([get("jobs/failed/groups"), loadPolicies()]);
    groupsAnswer = answer;
    if (!RQ.unchanged("groups", groupsAnswer)) {
      renderGroups(groupsAnswer);
      renderQueues();
    }
  };
  const loadTimeline = async () => {
    timeline = await get("jobs/timeline");
    if (!RQ.unchanged("timeline", timeline)) renderTrend();
  };
  const loadAll = () => Promise.all([loadTimeline(), loadStats(), loadSupervisor(), loadGroups()]);

  const number = (field, value) => h("td", { class: "n", "data-field": field }, fmt(value));

  /**
   * Waiting and exhausted jobs per queue, and as of when: from the stats when they carry
   * them, else summed over the groups' by_state, else the last scan's per-queue figures.
   */
  function backlog() {
    const queues = Object.values((stats && stats.queues) || {});
    if (queues.length && queues.every((q) => q.waiting !== undefined && q.exhausted !== undefined)) {
      return { of: (q) => stats.queues[q] || {}, note: "waiting and exhausted now" };
    }
    const groups = (groupsAnswer && groupsAnswer.groups) || [];
    if (groupsAnswer && groups.every((g) => g.by_state)) {
      const sums = byQueue(["waiting", "exhausted"]);
      return { of: sums, note: ["waiting and exhausted as of ", when(groupsAnswer.as_of)] };
    }
    const scan = supervisor && supervisor.last_scan;
    if (scan) {
      const perQueue = (scan.report && scan.report.per_queue) || {};
      return { of: (q) => perQueue[q] || {}, note: ["waiting and exhausted as of the last scan, ", when(scan.finished_at)] };
    }
    return { of: () => ({}), note: "waiting and exhausted come with the first scan" };
  }

  /**
   * The groups' `by_state` counts of `states`, summed per queue: a function from a queue to
   * its sums (zeros for a queue without groups; empty before the groups' first answer).
   */
  function byQueue(states) {
    const zero = () => Object.fromEntries(states.map((state) => [state, 0]));
    const sums = {};
    for (const g of (groupsAnswer && groupsAnswer.groups) || []) {
      const sum = sums[g.queue] || (sums[g.queue] = zero());
      for (const state of states) sum[state] += (g.by_state && g.by_state[state]) || 0;
    }
    return (q) => (groupsAnswer ? sums[q] || zero() : {});
  }

  function renderQueues() {
    if (!stats) return;
    const { of, note } = backlog();
    const alone = byQueue(["unmatched", "ignored"]);
    const names = Object.keys(stats.queues || {}).sort();
    fill($("#queues tbody"), names.map((queue) => {
      const s = stats.queues[queue];
      const b = of(queue);
      return h("tr", { "data-queue": queue },
        h("td", {}, h("a", { href: `jobs?queue=${enc(queue)}` }, queue)),
        number("failed", s.failed),
        number("waiting", b.waiting),
        number("exhausted", b.exhausted),
        number("unmatched", alone(queue).unmatched),
        number("ignored", alone(queue).ignored),
        number("queued", s.queued));
    }));
    $("#queues-empty").hidden = names.length > 0;
    fill($("#queues-note"), `${plural(stats.failed_count, "failed job")} · `, note);
  }

  function fact(term, ...value) {
    return [h("dt", {}, term), h("dd", {}, value)];
  }

  function renderSupervisor() {
    const s = supervisor;
    const badge = $("#supervisor-badge");
    badge.textContent = s.paused ? "Paused" : s.dry_run ? "Running (dry run)" : "Running";
    badge.className = `badge ${s.paused ? "warn" : "ok"}`;
    badge.dataset.state = s.paused ? "paused" : "running";
    const scan = s.last_scan;
    const report = (scan && scan.report) || {};
    const circuits = s.open_circuits || [];
    fill($("#supervisor-state"),
      fact("Automatic actions", s.paused
        ? ["paused on every instance", s.paused_by ? ` by ${s.paused_by}` : "", s.paused_at ? [", ", when(s.paused_at)] : "",
          s.paused_reason ? [": ", h("q", { "data-field": "paused-reason" }, s.paused_reason)] : ""]
        : "running"),
      fact("Active instance", s.active_instance
        ? [h("code", {}, s.active_instance), s.active_instance === s.instance ? " (this one)" : ""]
        : h("span", { class: "warn-text" }, "none holds the lease right now")),
      s.active_instance === s.instance ? null : fact("This instance", h("code", {}, s.instance || "—"), s.active ? " (active)" : " (standby)"),
      fact("Last scan", scan
        ? [when(scan.finished_at), ` · ${fmt(report.duration_ms)} ms · ${fmt(report.scanned)} scanned, ${fmt(report.requeued)} requeued, ${fmt(report.purged)} purged`]
        : "none yet"),
      fact("Next due", !report.next_due_at ? h("span", { class: "muted" }, "nothing waiting")
        : s.paused ? h("span", { class: "warn-text", title: report.next_due_at }, "nothing while paused")
        : when(report.next_due_at)),
      fact("Circuit breakers", circuits.length
        ? h("ul", { class: "plain" }, circuits.map((c) => h("li", { "data-circuit": c.policy },
          h("strong", {}, c.policy), " open until ", when(c.until),
          c.requeues !== undefined ? ` (${fmt(c.failed_again)} of ${plural(c.requeues, "requeue")} failed again)` : "")))
        : "all closed"),
      s.redis_connected === false ? fact("Redis", h("span", { class: "warn-text" }, "not connected")) : null,
    );
    $("[data-action=pause]").hidden = !!s.paused;
    $("[data-action=resume]").hidden = !s.paused;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  /** An SVG element (h() makes HTML ones); its text is only ever text nodes, like h()'s. */
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const clock = (date) => date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const failures = (n) => plural(n, "failure");

  /**
   * One bar chart of a timeline series (`minutes` or `hours`), with its text alternative: the
   * SVG is an image labelled by its <title>, and the same sentence is the caption under it.
   */
  function chart(figure, series, what) {
    const counts = series.counts || [];
    const step = series.step_seconds * 1000;
    const start = new Date(series.start).getTime();
    const at = (i) => new Date(start + i * step);
    const label = (i) => (series.step_seconds >= 3600
      ? `${at(i).toLocaleDateString([], { month: "short", day: "numeric" })} ${clock(at(i))}–${clock(at(i + 1))}`
      : clock(at(i)));
    const total = counts.reduce((a, b) => a + b, 0);
    const max = Math.max(0, ...counts);
    const busiest = counts.indexOf(max);
    let text = total
      ? `${failures(total)} in ${what.span}, the most ${fmt(max)} in ${what.unit} ${label(busiest)}`
      : `No failures in ${what.span}`;
    if (what.recent) {
      const last = counts.slice(-15).reduce((a, b) => a + b, 0);
      const prev = counts.slice(-30, -15).reduce((a, b) => a + b, 0);
      if (total) text += `; ${fmt(last)} in the last 15 minutes, ${fmt(prev)} in the 15 before`;
    }
    text += ".";
    const id = `${figure.id}-title`;
    const bars = counts.map((n, i) => {
      const height = n ? Math.max(3, (n / max) * 96) : 0;
      return n ? svg("rect", {
        class: i === counts.length - 1 ? "bar current" : "bar",
        x: i * 10 + 1, y: 100 - height, width: 8, height,
        "data-count": n,
      }, svg("title", {}, `${label(i)}: ${failures(n)}`)) : null;
    });
    fill(figure,
      svg("svg", { viewBox: `0 0 ${counts.length * 10} 100`, preserveAspectRatio: "none", role: "img", "aria-labelledby": id },
        svg("title", { id }, text), bars),
      h("div", { class: "axis", "aria-hidden": "true" }, h("span", {}, what.from), h("span", {}, "now")),
      h("figcaption", { "data-field": "summary" }, text));
  }

  function renderTrend() {
    chart($("#trend-minutes"), timeline.minutes, { span: "the last hour", unit: "the minute", from: "60 min ago", recent: true });
    chart($("#trend-hours"), timeline.hours, { span: "the last 24 hours", unit: "the hour", from: "24 h ago" });
    const notes = ["failed jobs in the registries now, by failure time"];
    if (timeline.earlier) notes.push(`${fmt(timeline.earlier)} earlier`);
    if (timeline.later) notes.push(`${fmt(timeline.later)} dated ahead of this clock`);
    fill($("#trend-note"), notes.join(" · "), timeline.as_of ? [" · as of ", when(timeline.as_of)] : "");
  }

  /**
   * A group's last 15 minutes against the 15 before (rising ↑, falling ↓), under its count;
   * nothing for a group quiet for half an hour.
   */
  function recent(g) {
    const last = g.last_15m || 0;
    const prev = g.prev_15m || 0;
    if (!last && !prev) return null;
    const arrow = last > prev ? h("span", { class: "rising" }, " ↑") : last < prev ? " ↓" : "";
    return h("div", { class: "muted small nowrap", "data-field": "recent", title: `${failures(last)} in the last 15 minutes, ${fmt(prev)} in the 15 before` },
      `${fmt(last)} in 15 min`, arrow);
  }

  /** The group's key in data-group: queue|function|exception (empty for a missing one). */
  const groupKey = (g) => g.key ?? [g.queue, g.func_name ?? "", g.exc_type ?? ""].join("|");
  const GLOB = /[*?[\]{}\\]/;

  /** Why retry-all's filters cannot select exactly this group, if they cannot. */
  function unselectable(g) {
    if (g.known === false) return "The function or exception of some of these jobs is not read yet; try again after the next scan.";
    if (!g.func_name) return "These jobs have no function name, which the bulk filters cannot select.";
    if (!g.exc_type) return "These jobs have no exception type, which the bulk filters cannot select.";
    if (GLOB.test(g.func_name) || GLOB.test(g.exc_type)) return "The name holds glob characters; select these jobs on the jobs page.";
    return null;
  }

  /** "3 waiting · 1 exhausted" for a group's by_state. */
  function states(g) {
    const entries = Object.entries(g.by_state || {}).filter(([, n]) => n > 0);
    if (!entries.length) return g.state ? h("span", { class: "badge" }, g.state) : null;
    return h("div", { class: "muted small", "data-field": "states" }, entries.map(([state, n]) => `${fmt(n)} ${state}`).join(" · "));
  }

  /**
   * The "Next retry" and "Purge at" cells: the group's next automatic action goes into the
   * column of its policy's action; the by_state summary follows it. While automatic actions
   * are paused nothing is due, so no time counts down: the cell says paused (time on hover).
   */
  function nextActions(g, next) {
    const purge = actions.get(g.policy) === "purge";
    const paused = !!(supervisor && supervisor.paused);
    const at = (shown) => {
      if (!shown || !next) return h("span", { class: "muted" }, "—");
      if (!paused) return when(next);
      const date = new Date(next);
      return h("span", { class: "badge warn", "data-field": "paused", title: `paused; due ${date.toLocaleString()} (${next}) once resumed` }, "paused");
    };
    return [
      h("td", { "data-field": "next" }, at(!purge), purge ? null : states(g)),
      h("td", { "data-field": "purge-at" }, at(purge), purge ? states(g) : null),
    ];
  }

  /** Where the answer comes from, for the note. */
  const SOURCES = { index: "from the failure index", redis: "read from Redis" };

  const groups = new Map();

  function renderGroups(answer) {
    const list = [...(answer.groups || [])].sort((a, b) => b.count - a.count);
    groups.clear();
    fill($("#groups tbody"), list.map((g) => {
      const key = groupKey(g);
      groups.set(key, g);
      const why = unselectable(g);
      const policies = Object.entries(g.policies || {});
      const policy = g.policy ?? "(unmatched)";
      const next = g.next_due ?? g.next_retry_at ?? null;
      const filter = new URLSearchParams({ queue: g.queue });
      if (g.func_name) filter.set("function", g.func_name);
      if (g.exc_type) filter.set("exception", g.exc_type);
      return h("tr", { "data-group": key },
        h("td", {}, g.queue,
          g.new ? h("span", { class: "badge new", "data-field": "new", title: "Its first failure is within the last 15 minutes" }, "new") : null),
        h("td", {}, h("code", {}, g.func_name ?? "—")),
        h("td", {}, h("span", { class: "exc" }, g.exc_type ?? "—")),
        h("td", { class: "n" }, h("span", { "data-field": "count" }, fmt(g.count)), recent(g)),
        h("td", { "data-field": "failed" }, when(g.newest_failed_at ?? g.last_failed_at),
          h("div", { class: "muted small nowrap" }, "first ", when(g.oldest_failed_at ?? g.first_failed_at))),
        h("td", { "data-field": "policy", title: policies.map(([p, n]) => `${p}: ${n}`).join("\n") || null },
          policy, policies.length > 1 ? h("span", { class: "muted" }, ` +${policies.length - 1} more`) : ""),
        ...nextActions(g, next),
        h("td", { class: "row-actions" },
          h("a", { href: `jobs?${filter}`, class: "button small" }, "Jobs"),
          h("button", { type: "button", class: "small", "data-action": "retry-group", disabled: !!why, title: why || "Retry this group, after a preview" }, "Retry…"),
          h("button", { type: "button", class: "small danger", "data-action": "delete-group", disabled: !!why, title: why || "Delete this group, after a preview" }, "Delete…")));
    }));
    $("#groups-empty").hidden = list.length > 0;
    const notes = [plural(answer.total ?? list.reduce((n, g) => n + g.count, 0), "failed job"), plural(list.length, "group")];
    if (answer.undecodable) notes.push(`${fmt(answer.undecodable)} undecodable (in no group)`);
    if (answer.source) notes.push(SOURCES[answer.source] || answer.source);
    fill($("#groups-note"), notes.join(" · "), answer.as_of ? [" as of ", when(answer.as_of)] : "");
  }

  function groupAction(kind) {
    return (button) => {
      const g = groups.get(button.closest("[data-group]").dataset.group);
      if (!g) return;
      RQ.bulk(kind, { queue: g.queue, function: g.func_name, exception: g.exc_type }, {
        label: `the group ${g.queue} · ${g.func_name} · ${g.exc_type}`,
        expected: g.count,
        after: loadAll,
      });
    };
  }

  RQ.on("retry-group", groupAction("retry"));
  RQ.on("delete-group", groupAction("delete"));
  // A pause stops every instance's automatic retries and purges: it asks first, and takes a
  // reason that goes to the audit and shows beside "paused by" (issue 22, item 8).
  RQ.on("pause", () => RQ.confirmThen({
    title: "Pause all instances",
    preview: async () => [
      h("p", {}, "Automatic retries and purges stop on every instance sharing this Redis until someone resumes them. Scans go on; manual actions still work."),
      h("label", { class: "reason" }, "Reason (for the audit and the overview) ",
        h("input", { name: "reason", type: "text", maxlength: "500", placeholder: "e.g. payments API down, INC-1234", spellcheck: "false" })),
    ],
    confirmLabel: "Pause all instances",
    danger: true,
    commit: async () => {
      const reason = ($("#action input[name=reason]").value || "").trim();
      const { body } = await call("POST", "supervisor/pause", { reason });
      supervisor = body;
      RQ.unchanged("supervisor", body);
      supervisorChanged();
      return "Automatic actions are paused on every instance sharing this Redis. Manual actions still work.";
    },
  }));
  RQ.on("resume", () => RQ.act("Resume all instances", async () => {
    const { body } = await call("POST", "supervisor/resume");
    supervisor = body;
    RQ.unchanged("supervisor", body);
    supervisorChanged();
    return "Automatic actions are running again on every instance.";
  }));
  RQ.on("scan", () => RQ.act("Scan now", async () => {
    await call("POST", "supervisor/scan");
    setTimeout(() => loadSupervisor().catch(() => {}), 1500);
    return "Scan requested: the active instance scans now.";
  }));

  RQ.start({ load: loadAll, sources: [loadStats, loadSupervisor, loadGroups, loadTimeline] });
})();

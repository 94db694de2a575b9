// Policies (/ui/policies): the table in evaluation order, as GET /api/v1/policies answers it.
"use strict";

(() => {
  const { $, h, fill, fmt, get } = RQ;

  const any = () => h("span", { class: "muted" }, "any");
  const list = (items) => (items && items.length ? items.map((x, i) => [i ? ", " : "", h("code", {}, x)]) : any());

  /** "7 d", "30 min" for seconds. */
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return h("span", { class: "muted" }, "—");
    for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"]]) {
      if (seconds >= size && seconds % size === 0) return `${fmt(seconds / size)} ${unit}`;
    }
    return `${fmt(seconds)} s`;
  }

  async function load() {
    const answer = await get("policies");
    if (RQ.unchanged("policies", answer)) return;
    const policies = answer.policies || [];
    fill($("#policies tbody"), policies.map((p, i) => h("tr", { "data-policy": p.name },
      h("td", { class: "n" }, String(i + 1)),
      h("td", {}, h("strong", {}, p.name)),
      h("td", {}, h("span", { class: `badge action-${p.action}` }, p.action)),
      h("td", {}, list(p.queues)),
      h("td", {}, list(p.functions)),
      h("td", {}, list(p.exceptions)),
      h("td", {}, p.error_pattern ? h("code", {}, p.error_pattern) : any()),
      h("td", {}, p.max_attempts !== null && p.max_attempts !== undefined ? `up to ${fmt(p.max_attempts)}` : h("span", { class: "muted" }, "—"),
        p.at_front ? h("div", { class: "muted small" }, "at the front") : null,
        p.requeue_to ? h("div", { class: "muted small", "data-field": "requeue-to" }, "into queue ", h("code", {}, p.requeue_to)) : null,
        p.hold_when ? h("div", { class: "muted small", "data-field": "hold-when" }, `held when ${p.hold_when.replace("|", " or ").replace("queue_longer_than=", "queue longer than ")}`) : null),
      h("td", {}, p.backoff ?? h("span", { class: "muted" }, "—")),
      h("td", {}, p.on_exhausted ?? h("span", { class: "muted" }, "—")),
      h("td", {}, p.action === "purge" ? duration(p.purge_after_seconds) : h("span", { class: "muted" }, "—")),
      h("td", { "data-field": "meta" }, p.meta ? Object.entries(p.meta).map(([k, v], i) => [i ? " and " : "", h("code", {}, `${k} = ${v}`)]) : any()),
      h("td", { "data-field": "max-age" }, p.max_age_seconds ? duration(p.max_age_seconds) : h("span", { class: "muted" }, "—")))));
    $("#policies-empty").hidden = policies.length > 0;
  }

  RQ.start({ load, sources: [load] });
})();

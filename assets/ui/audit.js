// Audit (/ui/audit): recent actions from GET /api/v1/audit: who, what, how many, why.
"use strict";

(() => {
  const { $, h, fill, fmt, when, get, jobLink } = RQ;
  const SHOWN_IDS = 5;

  async function load() {
    const answer = await get("audit", { limit: 100 });
    if (RQ.unchanged("audit", answer)) return;
    const entries = answer.entries || [];
    fill($("#audit tbody"), entries.map((e) => {
      const ids = e.job_ids || [];
      const more = e.count - Math.min(ids.length, SHOWN_IDS);
      return h("tr", { "data-audit-id": e.id },
        h("td", {}, when(e.at)),
        h("td", {}, e.who),
        h("td", {}, h("span", { class: "badge" }, e.action)),
        h("td", {}, e.queue || h("span", { class: "muted" }, "—")),
        h("td", { class: "n", "data-field": "count" }, fmt(e.count)),
        h("td", {}, h("code", {}, e.why)),
        h("td", { class: "ids" }, ids.slice(0, SHOWN_IDS).map((id, i) => [i ? ", " : "", jobLink(id)]),
          more > 0 ? h("span", { class: "muted" }, ` +${fmt(more)}`) : ""));
    }));
    $("#audit-empty").hidden = entries.length > 0;
  }

  RQ.start({ load, sources: [load] });
})();

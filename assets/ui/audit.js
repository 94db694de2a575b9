// Audit (/ui/audit): who did what, from GET /api/v1/audit, with its filters (who, action,
// queue, job id, since/until with presets, people only) and paging to older entries through
// the whole stream with its cursor (issue 22, item 4).
"use strict";

(() => {
  const { $, h, fill, fmt, plural, when, get, jobLink } = RQ;
  const SHOWN_IDS = 5;
  /** The API's filters, passed through as typed; a refused one is said in the notice. */
  const FILTERS = ["who", "action", "queue", "job_id", "since", "until", "people_only"];

  const query = new URLSearchParams(window.location.search);
  const filters = {};
  for (const name of FILTERS) {
    const value = (query.get(name) || "").trim();
    if (value) filters[name] = value;
  }
  const cursor = query.get("cursor") || "";

  // The form shows the filters in force.
  for (const [name, value] of Object.entries(filters)) {
    const field = $(`#audit-filter [name=${name}]`);
    if (!field) continue;
    if (field.type === "checkbox") field.checked = value === "true";
    else field.value = value;
  }
  // A preset fills in "since" and filters at once, keeping the other filters.
  document.querySelectorAll("#audit-filter [data-since]").forEach((button) => {
    button.addEventListener("click", () => {
      $("#audit-filter [name=since]").value = button.dataset.since;
      $("#audit-filter [name=until]").value = "";
      $("#audit-filter").requestSubmit();
    });
  });
  // Empty fields stay out of the address, so that it reads as what was asked.
  $("#audit-filter").addEventListener("formdata", (event) => {
    for (const [name, value] of [...event.formData.entries()]) {
      if (value === "") event.formData.delete(name);
    }
  });

  /** When: the first write, and for a folded entry of the supervisor's the last one too. */
  function period(e) {
    return e.last_at ? [when(e.at), " – ", when(e.last_at)] : when(e.at);
  }

  function row(e) {
    const ids = e.job_ids || [];
    const more = e.count - Math.min(ids.length, SHOWN_IDS);
    return h("tr", { "data-audit-id": e.id },
      h("td", {}, period(e)),
      h("td", {}, e.who),
      h("td", {}, h("span", { class: "badge" }, e.action)),
      h("td", {}, e.queue || h("span", { class: "muted" }, "—")),
      h("td", { class: "n", "data-field": "count" }, fmt(e.count)),
      h("td", {}, h("code", {}, e.why)),
      h("td", { class: "ids" }, ids.slice(0, SHOWN_IDS).map((id, i) => [i ? ", " : "", jobLink(id)]),
        more > 0 ? h("span", { class: "muted" }, ` +${fmt(more)}`) : ""));
  }

  async function load() {
    const answer = await get("audit", { ...filters, cursor, limit: 100 });
    if (RQ.unchanged("audit", answer)) return;
    const entries = answer.entries || [];
    fill($("#audit tbody"), entries.map(row));
    const filtered = Object.keys(filters).length > 0 || cursor;
    const empty = $("#audit-empty");
    empty.textContent = filtered ? "No entries match." : "Nothing recorded yet.";
    empty.hidden = entries.length > 0;
    $("#audit-searched").textContent =
      `Newest first; looked through ${fmt(answer.searched)} of ${plural(answer.stream_len, "entry", "entries")}.`;
    const older = $("#older");
    older.hidden = !answer.next_cursor;
    if (answer.next_cursor) {
      const target = new URLSearchParams(query);
      target.set("cursor", answer.next_cursor);
      older.href = `audit?${target}`;
    }
    const newest = $("#newest");
    newest.hidden = !cursor;
    const first = new URLSearchParams(query);
    first.delete("cursor");
    newest.href = `audit?${first}`;
  }

  RQ.start({ load, sources: [load] });
})();

// rq-retryd console: what every page shares. Sign-in, API calls, building the DOM, live
// refresh, and the action panel with its two-step (preview, then confirm) bulk actions.
//
// The pages are static shells; their data comes from the JSON API. Signing in exchanges the
// token the user typed for a session cookie (HttpOnly, SameSite=Strict: no script reads it,
// no other site sends it; src/http/session.rs), so every tab of the browser is signed in and
// every request passes the API's own role checks; the API refuses writes from other sites
// (src/http/guard.rs), so the cookie reopens no CSRF hole. Data from jobs is
// attacker-controlled text (tracebacks, descriptions): it only ever enters the page as text
// nodes (h() below, textContent), never as HTML.
"use strict";

const RQ = (() => {
  /** Live refresh: one API request per tick, one tick every POLL_MS while the tab is visible. */
  const POLL_MS = 5000;
  /** Pages live at /ui/<page>, so this is the API wherever the daemon is mounted. */
  const API = new URL("../api/v1/", document.baseURI);

  const $ = (selector, root = document) => root.querySelector(selector);

  /** An element with attributes and children; strings become text nodes. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /**
   * A dotted name (function, exception type) that may wrap after a `.` but never inside a
   * word: `<wbr>` adds a break opportunity and no text.
   */
  function dotted(text) {
    return String(text).split(/(?<=\.)/).flatMap((part, i) => (i ? [h("wbr", {}), part] : [part]));
  }

  /** Replaces the children of `node`. */
  function fill(node, ...children) {
    node.replaceChildren();
    for (const child of children.flat(Infinity)) {
      if (child !== undefined && child !== null && child !== false) node.append(child);
    }
    return node;
  }

  const enc = encodeURIComponent;
  // The formatters are made once: toLocaleString builds one per call, which was half of a
  // listing page's own script time (100 times per page; bench/first_paint.py's profile).
  const NUMBER = new Intl.NumberFormat("en-US");
  const LOCAL_TIME = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit",
  });
  const fmt = (n) => (n === undefined || n === null ? "—" : NUMBER.format(Number(n)));
  const plural = (n, one, many) => `${fmt(n)} ${n === 1 ? one : many || one + "s"}`;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** "3 min ago" / "in 2 h" for a time. */
  function relative(date) {
    const seconds = Math.round((Date.now() - date.getTime()) / 1000);
    const abs = Math.abs(seconds);
    const [n, unit] =
      abs < 60 ? [abs, "s"]
        : abs < 3600 ? [Math.round(abs / 60), "min"]
          : abs < 172800 ? [Math.round(abs / 3600), "h"]
            : [Math.round(abs / 86400), "d"];
    if (abs < 2) return "now";
    return seconds >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
  }

  /** A <time> showing how long ago (or until) `iso`, with the exact time on hover. */
  function when(iso) {
    if (iso === undefined || iso === null || iso === "") return h("span", { class: "muted" }, "—");
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return h("time", { datetime: iso, title: `${LOCAL_TIME.format(date)} (${iso})` }, relative(date));
  }

  /** Brings every relative time on the page up to date (no request needed). */
  function retime() {
    for (const node of document.querySelectorAll("time[datetime]")) {
      const date = new Date(node.dateTime);
      if (!Number.isNaN(date.getTime())) node.textContent = relative(date);
    }
  }

  const seen = new Map();
  /**
   * Whether `value` is what `key` answered last time (and remembers it). A refresh that
   * brings nothing new leaves the page alone, so a selection or a hovered row survives it.
   */
  function unchanged(key, value) {
    const text = JSON.stringify(value);
    if (seen.get(key) === text) return true;
    seen.set(key, text);
    return false;
  }

  /** A link to a job's page. */
  function jobLink(id) {
    return h("a", { href: `job?id=${enc(id)}`, class: "job-id" }, id);
  }

  /** An answer of the API that is not a success. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /**
   * One API request: `path` relative to /api/v1/, `params` as the query string (empty values
   * left out). Answers {status, body}; throws ApiError for anything but 2xx. A 401 opens the
   * sign-in form.
   */
  async function call(method, path, params) {
    const url = new URL(path, API);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json" };
    let response;
    try {
      // The session cookie (HttpOnly; SameSite=Strict) rides along; no token is kept in the page.
      response = await fetch(url, { method, headers, cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      throw new ApiError(0, "unreachable", `rq-retryd does not answer (${e.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (response.status === 401) {
      // Unless the user signed in while this request was on its way.
      if (!signingIn) signIn.show(null);
      throw new ApiError(401, "unauthorized", "sign in first");
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        (body && body.code) || `http_${response.status}`,
        (body && body.error) || response.statusText || `HTTP ${response.status}`,
      );
    }
    return { status: response.status, body };
  }

  const get = (path, params) => call("GET", path, params).then((r) => r.body);

  // ---- sign-in ---------------------------------------------------------------------------

  /** Whether a sign-in is on its way (a 401 of an older request must not reopen the form). */
  let signingIn = false;

  /** Shown only when the API answers 401; with no token configured it never appears. */
  const signIn = {
    shown: false,
    show(message) {
      this.shown = true;
      $("#sign-in").hidden = false;
      $("#page").hidden = true;
      $("#action").hidden = true;
      const error = $("#sign-in-error");
      error.hidden = !message;
      error.textContent = message || "";
      $("#sign-in input[name=token]").focus();
      $("#sign-out").hidden = true;
      $("#whoami").hidden = true;
    },
    hide() {
      this.shown = false;
      $("#sign-in").hidden = true;
      $("#page").hidden = false;
    },
  };

  // ---- who is signed in --------------------------------------------------------------------

  /** The buttons that change state (and the confirm step of every such action). */
  const WRITES = ["retry", "delete", "retry-group", "delete-group", "pause", "resume", "scan", "confirm"]
    .map((action) => `[data-action="${action}"]`).join(", ");
  const READ_ONLY = "Your token may only read (role read): ask for a token with role operate to act";
  let role = null;

  /**
   * With a `read` token, disables every button that changes state, with a title saying why.
   * Pages draw and redraw their buttons (and enable them) as data comes in, so this runs on
   * every change to the page. The API refuses such requests anyway (403); this only spares
   * the user the refusal.
   */
  function lockWrites() {
    if (role !== "read") return;
    for (const button of document.querySelectorAll(WRITES)) {
      if (!button.disabled) button.disabled = true;
      if (button.title !== READ_ONLY) button.title = READ_ONLY;
    }
  }
  new MutationObserver(lockWrites).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["disabled", "title"],
  });

  /** Asks the API who the token is (GET whoami) and shows it in the header. */
  async function identify() {
    const me = await get("whoami");
    // Signed in again with a token that may do more: redraw the buttons locked before.
    if (role === "read" && me.role !== "read") window.location.reload();
    role = me.role;
    const badge = $("#whoami");
    badge.textContent = `${me.name} · ${me.role}`;
    badge.dataset.role = me.role;
    const how = { session: "Signed in", token: "Signed in with a token", proxy: "Signed in through your single sign-on proxy" }[me.via];
    badge.title = me.via === "none"
      ? "No token is configured: this address may act"
      : me.role === "read" ? `${how}, role read: every page, no action` : `${how}, role operate`;
    badge.hidden = false;
    // Only a session cookie can be signed out of here (a proxy's user signs out at the proxy).
    $("#sign-out").hidden = me.via !== "session";
    lockWrites();
  }

  // ---- notices and the action panel ------------------------------------------------------

  /** A message at the top of the page for failures outside an action (a refresh, a load). */
  function notice(text) {
    let bar = $("#notice");
    if (!bar) {
      bar = h("p", { id: "notice", class: "notice error", role: "status" });
      $("main").prepend(bar);
    }
    bar.hidden = !text;
    bar.textContent = text || "";
  }

  /** How an error reads to the user. A 403 is a refusal: the token may only read. */
  function describe(error) {
    if (error instanceof ApiError && error.status === 403) return `Refused: ${error.message}`;
    if (error instanceof ApiError && error.status) return `${error.message} (HTTP ${error.status}, ${error.code})`;
    return error.message || String(error);
  }

  /**
   * The action panel above the page: a title, a body, buttons and an outcome. The outcome
   * carries data-outcome = working | preview | done | refused | failed | nothing, for tests and
   * scripts.
   */
  function panel(title) {
    const section = $("#action");
    const body = h("div", { class: "action-body" });
    const buttons = h("div", { class: "buttons" });
    const outcome = h("p", { class: "outcome", "data-outcome": "working" }, "Working…");
    const close = h("button", { type: "button", class: "link close", "data-action": "close", title: "Dismiss" }, "Dismiss");
    close.addEventListener("click", () => { section.hidden = true; });
    fill(section, h("div", { class: "card-head" }, h("h2", {}, title), close), body, outcome, buttons);
    section.hidden = false;
    section.scrollIntoView({ block: "nearest" });
    const p = {
      body: (...nodes) => fill(body, nodes),
      buttons: (...nodes) => fill(buttons, nodes),
      outcome(kind, text) {
        outcome.dataset.outcome = kind;
        outcome.className = `outcome ${kind}`;
        outcome.textContent = text;
      },
      failed(error) {
        if (error instanceof ApiError && error.status === 401) {
          p.outcome("failed", "Sign in first.");
          return;
        }
        p.outcome(error instanceof ApiError && error.status === 403 ? "refused" : "failed", describe(error));
        p.buttons();
      },
    };
    return p;
  }

  /** Redraws the page after an action; a failure there is a notice, not the action's. */
  function redraw(after) {
    if (!after) return;
    Promise.resolve()
      .then(after)
      .then(() => stamp(), (e) => notice(describe(e)));
  }

  /** A one-step action (pause, resume, scan, retry one): run it, show what came of it. */
  async function act(title, run, after) {
    const p = panel(title);
    try {
      p.outcome("done", await run());
    } catch (e) {
      p.failed(e);
      return;
    }
    redraw(after);
  }

  /**
   * A two-step action: `preview` tells what would happen (returns the panel body's nodes,
   * or null when there is nothing to do), then a button with data-action="confirm"
   * (labelled `confirmLabel`, a text or a function called after the preview) runs `commit`,
   * whose answer text is the outcome. `check` (optional) is asked first: a text it returns
   * refuses the click with that text, sends nothing and leaves the buttons to try again.
   */
  async function confirmThen({ title, preview, confirmLabel, danger, check, commit, after }) {
    const p = panel(title);
    p.outcome("working", "Looking at what this would touch…");
    let nodes;
    try {
      nodes = await preview();
    } catch (e) {
      p.failed(e);
      return;
    }
    if (!nodes) {
      p.outcome("nothing", "Nothing matches: there is nothing to do.");
      return;
    }
    p.body(nodes);
    p.outcome("preview", "Nothing has been changed yet.");
    const label = typeof confirmLabel === "function" ? confirmLabel() : confirmLabel;
    const confirm = h("button", { type: "button", class: danger ? "danger" : "primary", "data-action": "confirm" }, label);
    const cancel = h("button", { type: "button", "data-action": "cancel" }, "Cancel");
    cancel.addEventListener("click", () => { $("#action").hidden = true; });
    confirm.addEventListener("click", async () => {
      const wrong = check && check();
      if (wrong) {
        p.outcome("refused", wrong);
        return;
      }
      confirm.disabled = true;
      cancel.disabled = true;
      p.outcome("working", "Working…");
      try {
        p.outcome("done", await commit(p));
        p.buttons();
      } catch (e) {
        p.failed(e);
        return;
      }
      redraw(after);
    });
    p.buttons(confirm, cancel);
  }

  // ---- bulk actions ----------------------------------------------------------------------

  const BULK = {
    retry: { method: "POST", path: "jobs/failed/retry-all", verb: "Retry", done: "Requeued" },
    delete: { method: "DELETE", path: "jobs/failed/clear", verb: "Delete", done: "Deleted" },
  };

  /**
   * retry-all or clear with `params`. Large selections answer 202 with a task id: follow it
   * at tasks/{id} (once a second) until it is no longer running, showing each answer to
   * `watch` (if given).
   */
  async function runBulk(kind, params, watch) {
    const { method, path } = BULK[kind];
    let { body } = await call(method, path, params);
    while (body && body.state === "running") {
      if (watch) watch(body);
      await sleep(1000);
      body = await get(`tasks/${enc(body.task_id)}`);
    }
    if (body && body.state === "failed") throw new ApiError(503, "task_failed", body.error || "the task failed");
    if (body && body.state === "interrupted") {
      throw new ApiError(503, "task_interrupted", `The instance running this task stopped after ${counts(kind, body)}; the rest stays failed.`);
    }
    return body;
  }

  /** "120 of 500 gone through: requeued 118, conflicts 2, refused 0". */
  function counts(kind, t) {
    const moved = kind === "retry" ? t.requeued_count : t.deleted_count;
    const of = t.total === null || t.total === undefined ? "" : ` of ${fmt(t.total)}`;
    const doubt = t.in_doubt ? `, in doubt ${fmt(t.in_doubt)} (sent when Redis failed; the audit says which were done)` : "";
    return `${fmt(t.done)}${of} gone through: ${BULK[kind].done.toLowerCase()} ${fmt(moved)}, conflicts ${fmt(t.conflicts)}, refused ${fmt(t.refused)}${doubt}`;
  }

  /**
   * A running task in the panel: a progress bar, its counts, and a Cancel button that asks
   * once more before it stops the task (DELETE tasks/{id}); what it has not written yet stays
   * as it is. Returns the `watch` for runBulk.
   */
  function watchTask(kind, p) {
    let asked = false;
    const cancel = (t) => {
      const stop = h("button", { type: "button", class: "danger", "data-action": "cancel-task" }, "Cancel task…");
      stop.addEventListener("click", () => {
        const sure = h("button", { type: "button", class: "danger", "data-action": "confirm-cancel-task" }, "Yes, stop it");
        const keep = h("button", { type: "button", "data-action": "keep-task" }, "Keep going");
        keep.addEventListener("click", () => p.buttons(stop));
        sure.addEventListener("click", async () => {
          asked = true;
          sure.disabled = keep.disabled = true;
          p.outcome("working", "Stopping… what is not requeued yet stays failed.");
          await call("DELETE", `tasks/${enc(t.task_id)}`).catch((e) => {
            if (!(e instanceof ApiError && e.status === 409)) p.failed(e);
          });
        });
        p.buttons(h("span", { class: "muted" }, "Stop the task? The jobs not handled yet stay where they are."), sure, keep);
      });
      return stop;
    };
    let shown = false;
    return (t) => {
      const bar = h("progress", { max: t.total || 1, value: t.total ? Math.min(t.done, t.total) : null, "aria-label": "progress" });
      p.body(h("div", { class: "task-progress", "data-field": "task-progress" },
        bar,
        h("p", { "data-field": "task-counts" }, counts(kind, t)),
        t.rate ? h("p", { class: "muted" }, `At most ${plural(t.rate, "job")} a second.`) : null,
        t.reason ? h("p", { class: "muted" }, "Reason: ", h("q", {}, t.reason)) : null));
      if (!asked) p.outcome("working", "Running…");
      if (!shown) {
        shown = true;
        p.buttons(cancel(t));
      }
    };
  }

  /** "queue = default · function = app.x" for a selection. */
  function selectionText(selection) {
    const parts = Object.entries(selection)
      .filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([k, v]) => `${k} = ${v}`);
    return parts.length ? parts.join(" · ") : "every failed job";
  }

  /**
   * Retry or delete every job `selection` (retry-all's filters) selects: first a dry run with
   * the exact count and a sample of ids, then the confirm button. `expected` is the count the
   * page showed; a preview that differs says so.
   */
  function bulk(kind, selection, { label, expected, after }) {
    const { verb, done } = BULK[kind];
    let matched = 0;
    // The global requeue limit, the most a rate may ask (null when the supervisor's state
    // could not be read: the API still refuses a rate above it).
    let limit = null;
    return confirmThen({
      title: `${verb} ${label}`,
      danger: kind === "delete",
      confirmLabel: () => `${verb} ${plural(matched, "job")}`,
      async preview() {
        const [r, s] = await Promise.all([
          runBulk(kind, { ...selection, dry_run: true }),
          get("supervisor").catch(() => null),
        ]);
        matched = r.matched_count;
        limit = (s && s.max_requeues_per_second) || null;
        if (!matched) return null;
        const sample = (r.job_ids || []).slice(0, 10);
        const more = matched - sample.length;
        const byException = Object.entries(r.by_exception || {});
        return [
          h("p", { class: "preview" },
            h("strong", { "data-field": "preview-count" }, plural(matched, "failed job")),
            kind === "retry" ? " would be requeued" : " would be deleted for good",
            ` (${selectionText(selection)}).`),
          expected !== undefined && expected !== null && expected !== matched
            ? h("p", { class: "warning" }, `The page showed ${fmt(expected)}; the selection matches ${fmt(matched)} now `
              + "(jobs changed meanwhile, or the filter also matches other jobs, e.g. a bare exception name matches dotted types ending in it).")
            : null,
          byException.length > 1
            ? h("p", { class: "muted" }, "By exception: ", byException.map(([e, n]) => `${e} ${fmt(n)}`).join(", "))
            : null,
          waitingNote(kind, r.by_state),
          h("p", { class: "sample" }, "Sample: ",
            sample.map((id, i) => [i ? ", " : "", jobLink(id)]),
            more > 0 ? ` and ${fmt(more)} more` : ""),
          h("div", { class: "bulk-options" },
            h("label", {}, h("span", {}, "Rate (jobs a second",
              limit ? [", ", h("span", { "data-field": "rate-limit" }, `at most ${fmt(limit)}/s`)] : "",
              "; empty: as fast as the global limit)"),
              h("input", { name: "rate", type: "number", min: "1", max: limit ? String(limit) : undefined, step: "1", inputmode: "numeric", placeholder: "e.g. 50" })),
            h("label", {}, "Reason (for the audit) ",
              h("input", { name: "reason", type: "text", maxlength: "500", placeholder: "e.g. INC-1234, payments API back", spellcheck: "false" }))),
        ];
      },
      check() {
        const input = $("#action .bulk-options input[name=rate]");
        const text = ((input && input.value) || "").trim();
        if (!text || !limit) return null;
        const n = Number(text);
        return /^[0-9]+$/.test(text) && n >= 1 && n <= limit
          ? null
          : `The rate must be a whole number of jobs a second from 1 to ${fmt(limit)} (at most ${fmt(limit)}/s, the global max_requeues_per_second); nothing was sent.`;
      },
      async commit(p) {
        const option = (name) => ($(`#action .bulk-options input[name=${name}]`).value || "").trim() || undefined;
        const params = { ...selection, rate: option("rate"), reason: option("reason"), wait_ms: 1000 };
        const watch = watchTask(kind, p);
        const r = await runBulk(kind, params, watch);
        if (r.state === "cancelled") {
          watch(r);
          const left = r.total === null || r.total === undefined ? "" : `; the other ${fmt(Math.max(r.total - r.done, 0))} stay failed`;
          p.buttons();
          return `Cancelled${r.cancel_requested_by ? ` by ${r.cancel_requested_by}` : ""}: ${counts(kind, r)}${left}.`;
        }
        const count = kind === "retry" ? r.requeued_count : r.deleted_count;
        const extra = [];
        if (r.conflicts) extra.push(`${plural(r.conflicts, "changed meanwhile and was left alone", "changed meanwhile and were left alone")}`);
        if (r.refused) extra.push(`${plural(r.refused, "refused by Redis and left as it was", "refused by Redis and left as they were")}`);
        if (r.skipped) extra.push(`${plural(r.skipped, "undecodable and never touched", "undecodable and never touched")}`);
        return `${done} ${plural(count, "job")}${extra.length ? `; ${extra.join("; ")}` : ""}.${warned(r.warnings)}`;
      },
      after,
    });
  }

  /**
   * How many of the selected jobs an automatic retry or purge is coming for anyway (their
   * policy's backoff or purge_after is running): a manual retry takes them early. From a dry
   * run answered by the failure index (`by_state`); nothing when it was read from Redis.
   */
  function waitingNote(kind, byState) {
    const waiting = (byState && byState.waiting) || 0;
    if (!waiting) return null;
    return h("p", { class: "muted", "data-field": "preview-waiting" },
      `${plural(waiting, "of them is", "of them are")} waiting for an automatic retry or purge`,
      kind === "retry" ? "; retrying now takes them early." : ".");
  }

  /**
   * A retry's warnings (the policy's hold_when conditions it met: no live worker, a long
   * queue) after its outcome; the retry itself went ahead.
   */
  function warned(warnings) {
    if (!warnings || !warnings.length) return "";
    return ` Warning: ${warnings.map((w) => w.message).join("; ")}.`;
  }

  /** Retry one job now (not destructive: no confirmation). */
  function retryJob(id, after) {
    return act(`Retry job ${id}`, async () => {
      const { body } = await call("POST", `failed-jobs/${enc(id)}/retry`);
      return `Job ${body.job_id} is queued again on ${body.queue}.${warned(body.warnings)}`;
    }, after);
  }

  /** Delete one job, after a confirmation. */
  function deleteJob(id, after) {
    return confirmThen({
      title: `Delete job ${id}`,
      danger: true,
      confirmLabel: "Delete this job",
      preview: async () => [h("p", {}, "This removes the job's hash, its results and its failed registry entry. RQ cannot run it afterwards.")],
      commit: async () => {
        await call("DELETE", `failed-jobs/${enc(id)}`);
        return `Job ${id} is deleted.`;
      },
      after,
    });
  }

  // ---- clicks, live refresh, start-up ------------------------------------------------------

  const handlers = {};
  /** Runs `handler(button)` on clicks on [data-action=name]. */
  function on(name, handler) {
    handlers[name] = handler;
  }
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button || button.disabled) return;
    const handler = handlers[button.dataset.action];
    if (handler) {
      event.preventDefault();
      handler(button);
    }
  });

  function stamp() {
    const now = new Date();
    const el = $("#updated");
    el.textContent = `updated ${now.toLocaleTimeString()}`;
    el.title = now.toISOString();
  }

  let reload = async () => {};

  /**
   * Starts a page: `load` fetches everything once (and again after signing in); then, while
   * the page is visible and Live is ticked, one of `sources` (each one request) runs every
   * POLL_MS, in turn. Nothing is fetched while the tab is hidden.
   */
  function start({ load, sources }) {
    document.querySelectorAll("[data-nav]").forEach((a) => {
      if (a.dataset.nav === document.body.dataset.page) a.setAttribute("aria-current", "page");
    });
    reload = async () => {
      try {
        await Promise.all([identify(), load()]);
        notice(null);
        stamp();
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) notice(describe(e));
      }
    };
    let next = 0;
    let timer = null;
    let last = Date.now();
    const liveBox = $("#live");
    // The next tick comes POLL_MS after the last one began, so coming back to the tab after a
    // while refreshes at once, yet never twice within POLL_MS.
    const schedule = () => {
      clearTimeout(timer);
      timer = null;
      if (!document.hidden && liveBox.checked && sources.length) {
        timer = setTimeout(tick, Math.max(0, last + POLL_MS - Date.now()));
      }
    };
    const tick = async () => {
      timer = null;
      if (signIn.shown) {
        // Nothing to fetch until a token is typed in; look again later.
        timer = setTimeout(tick, POLL_MS);
        return;
      }
      if (document.hidden || !liveBox.checked) return;
      last = Date.now();
      const source = sources[next++ % sources.length];
      retime();
      try {
        await source();
        notice(null);
        stamp();
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) notice(describe(e));
      }
      schedule();
    };
    document.addEventListener("visibilitychange", schedule);
    liveBox.addEventListener("change", schedule);
    reload().then(schedule);
  }

  // Signing in exchanges the token for a session cookie (POST /api/v1/session) that serves
  // every tab of this browser until sign-out or expiry; the token itself is kept nowhere.
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#sign-in input[name=token]");
    const token = input.value.trim();
    if (!token) return;
    signingIn = true;
    let response;
    try {
      response = await fetch(new URL("session", API), {
        method: "POST",
        headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (e) {
      response = null;
    } finally {
      signingIn = false;
    }
    if (!response || !response.ok) {
      let message = "rq-retryd does not answer.";
      if (response && response.status === 401) message = "That token was not accepted.";
      else if (response) {
        const body = await response.json().catch(() => null);
        message = (body && body.error) || `HTTP ${response.status}`;
      }
      signIn.show(message);
      return;
    }
    input.value = "";
    signIn.hide();
    $("#sign-out").hidden = false;
    reload();
  });
  $("#sign-out").addEventListener("click", async () => {
    await fetch(new URL("session", API), { method: "DELETE", cache: "no-store", credentials: "same-origin" }).catch(() => null);
    window.location.reload();
  });

  return {
    $, h, dotted, fill, enc, fmt, plural, when, jobLink, call, get, ApiError, describe, unchanged,
    on, start, act, confirmThen, bulk, retryJob, deleteJob,
    get reload() { return reload; },
  };
})();

#!/usr/bin/env python3
"""First meaningful paint of the console's pages beside rq-dashboard's (issue 22: "Console first
meaningful paint at 100k failed jobs <= 300 ms for every page, measured in headless Chromium
beside rq-dashboard's pages").

N failed jobs are seeded through RQ's own code into a throwaway redis-server (index_api.py's
seeding and its cached RDB under target/bench/), then on that Redis:

  retryd      `rq-retryd run` (--binary, release by default) with index_api.py's config: a 30-day
              retry and an ignore policy, so the seeded jobs stay failed; loopback, no token, so
              the console asks nobody to sign in (the probe fails a page that shows the form)
  dashboard   rq-dashboard 0.9.0 from its own venv (index_api.py's ensure_dashboard_venv)

Headless Chromium is driven through chromedriver's W3C HTTP API (urllib; no selenium). Every
load opens a fresh tab, installs the probe below (DevTools `Page.addScriptToEvaluateOnNewDocument`,
so it runs before any of the page's scripts and is not subject to its Content-Security-Policy)
and navigates. One untimed load of every page warms the HTTP cache and both servers first; then
`--rounds` rounds load every page once, the contenders interleaved (console page, its
rq-dashboard counterpart, next page ...; every other round in reverse order).

What is measured, "first meaningful paint" (FMP): the time from navigation start (the tab's
`performance.timeOrigin`, before the page's own HTTP request) until the first frame that shows
the page's main content is presented. Every page names its content as CSS selectors that must
all match at once (the jobs page: a job row `tr[data-job-id]` and the total; the job page: the
error header, the traceback, the status and the decision; rq-dashboard's queue page: a
`tr[data-role=job]`, not its "Loading..." placeholder row); a selector may also require its
element's text or value to be non-empty. The probe checks them in a requestAnimationFrame loop
from the document's start: the first frame whose rAF callback finds all of them is the first
frame to render them (nothing of the page's own runs between a frame's rAF callbacks and its
style, layout and paint). In that callback it appends a one-character marker (`elementtiming`,
fixed in the bottom-right corner), painted in that same frame, and FMP is the marker's Element
Timing `renderTime`: when Chromium presented that frame (it reports it to 4 ms). (A
MessageChannel message posted from the rAF, the usual "after the frame" trick, is recorded too
as `after_frame_ms`, but it runs behind whatever tasks the page queued before it: on /docs it
came a second after the frame was presented.) A load whose content is seen before any API answer has arrived is refused (the
selectors would match the empty shell), as is one that shows the sign-in form. For context each
load also records FCP, the last LCP entry (whatever is largest: a jobs page's table, where it
equals FMP, but the static filter form or a heading on others, before their data arrive), DOMContentLoaded, when the content went into the DOM (a MutationObserver), the
long tasks (> 50 ms) before FMP, and the API requests (fetch/XHR) answered before the frame, the
slowest named.

Per page: median, p90 (nearest rank) and max of the rounds, the rq-dashboard counterpart's
median and the ratio of the medians; a table on stdout and everything with --json. Exits 1 when
a load never showed its page's content (tests/it/first_paint.rs runs it so at a small size).

usage: target/venv-rq2/bin/python bench/first_paint.py --jobs 100000 --rounds 7 --json target/bench/results/first_paint.json
       target/venv-rq2/bin/python bench/first_paint.py --jobs 10000 --binary target/debug/rq-retryd --rounds 5
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (free_port, REPO)
import index_api  # noqa: E402  (seeding, BigServer, Daemon, Dashboard, the dashboard's venv)

REPO = bench.REPO
TARGET_MS = 300  # issue 22's target for every console page


# ---------------------------------------------------------------------------------------------
# the pages

def check(sel, need=None):
    """One piece of a page's main content: a CSS selector, and optionally `text` or `value`: the
    element's textContent or value must be non-empty (a filled box, not an empty shell)."""
    return {"sel": sel, "need": need}


class Page:
    """One page of one contender: its path, the content that makes its paint meaningful, and
    `fail` selectors that mean the page cannot show it (the console's sign-in form)."""

    def __init__(self, contender, name, path, checks, counterpart=None):
        self.contender, self.name, self.path, self.checks = contender, name, path, checks
        self.counterpart = counterpart
        self.fail = ["#sign-in:not([hidden])"] if contender == "retryd" else []

    @property
    def key(self):
        return f"{self.contender}: {self.name}"


def console_pages(n, job_id, deep_page, deep_offset, queue):
    """Every console page (src/http/ui.rs's PAGES, the search results, /docs), each with what
    its main content is and the rq-dashboard page it is compared with, if any."""
    q = urllib.parse.quote
    jobs_rows = [check("#jobs tbody tr[data-job-id]"), check("#total", "text")]
    return [
        Page("retryd", "overview", "/ui/", [
            check("#trend-minutes figcaption[data-field=summary]", "text"),
            check("#trend-hours figcaption[data-field=summary]", "text"),
            check("#supervisor-badge[data-state]"),
            check("#queues tbody tr[data-queue]"),
            check("#groups tbody tr[data-group]")], "overview"),
        Page("retryd", "jobs (all queues, newest)", "/ui/jobs", jobs_rows),
        Page("retryd", f"jobs ({queue}, oldest) page 1", f"/ui/jobs?queue={q(queue)}&order=oldest", jobs_rows,
             f"{queue} failed page 1"),
        Page("retryd", f"jobs ({queue}, oldest) at offset {deep_offset}",
             f"/ui/jobs?queue={q(queue)}&order=oldest&offset={deep_offset}", jobs_rows, f"{queue} failed page {deep_page}"),
        Page("retryd", f"jobs (all queues) at offset {n * 3 // 4}", f"/ui/jobs?offset={n * 3 // 4}", jobs_rows),
        Page("retryd", "search results q=unexpectedly closed", "/ui/jobs?q=" + q("unexpectedly closed"),
             jobs_rows + [check("#searching:not([hidden]) [data-field=q]", "text")]),
        Page("retryd", "job", f"/ui/job?id={q(job_id, safe='')}", [
            check("#error:not([hidden]) [data-field=exc-type]", "text"),
            check("#traceback", "text"),
            check("#facts [data-field=status]", "text"),
            check("#decision", "text")], "job"),
        Page("retryd", "policies", "/ui/policies", [check("#policies tbody tr[data-policy]")]),
        Page("retryd", "simulate (the running policies in the box)", "/ui/simulate", [check("#candidate", "value")]),
        Page("retryd", "audit", "/ui/audit", [check("#audit tbody tr[data-audit-id]")]),
        Page("retryd", "API docs (/docs, Swagger UI)", "/docs", [check(".opblock")]),
    ]


def dashboard_pages(job_id, deep_page, queue):
    """rq-dashboard 0.9.0's comparable pages. Each is a shell whose jQuery fetches JSON and
    replaces a "Loading..." row; the content is what replaces it."""
    q = urllib.parse.quote
    base = f"/0/view/jobs/{q(queue)}/failed/{index_api.DASH_PER_PAGE}/asc"
    return [
        Page("dashboard", "overview", "/", [check("#queues tbody tr[data-role=queue]")]),
        Page("dashboard", f"{queue} failed page 1", f"{base}/1", [check("#jobs tbody tr[data-role=job]")]),
        Page("dashboard", f"{queue} failed page {deep_page}", f"{base}/{deep_page}", [check("#jobs tbody tr[data-role=job]")]),
        Page("dashboard", "job", f"/0/view/job/{q(job_id, safe='')}", [check("#job-data pre.exc_info", "text")]),
    ]


# ---------------------------------------------------------------------------------------------
# the probe

# Runs at the start of every document of the tab, before the page's own scripts. Data-driven (no
# eval: the console's CSP allows none). Resolves window.__fmpReady with its record.
PROBE = r"""
(() => {
  const SPEC = __SPEC__;
  const t = { done: false };
  window.__fmp = t;
  let resolve;
  window.__fmpReady = new Promise((r) => { resolve = r; });
  const met = (c) => {
    const el = document.querySelector(c.sel);
    if (!el) return false;
    if (c.need === "text") return el.textContent.trim() !== "";
    if (c.need === "value") return (el.value || "").trim() !== "";
    return true;
  };
  const keep = (name, value) => { if (t[name] === undefined) t[name] = value; };
  const observe = (type, each) => {
    try {
      new PerformanceObserver((list) => list.getEntries().forEach(each)).observe({ type, buffered: true });
    } catch (e) { keep("error", "no " + type + " timing in this browser"); }
  };
  observe("paint", (e) => { if (e.name === "first-contentful-paint") keep("fcp", e.startTime); });
  observe("largest-contentful-paint", (e) => {
    t.lcp = e.renderTime || e.startTime;
    t.lcp_element = e.element ? e.element.tagName + (e.element.id ? "#" + e.element.id : "") : null;
  });
  t.long_tasks = [];
  observe("longtask", (e) => { t.long_tasks.push({ start: e.startTime, duration: e.duration }); });
  observe("element", (e) => { if (e.identifier === "fmp-marker") keep("presented", e.renderTime || e.loadTime); });
  const finish = (why) => {
    if (t.done) return;
    t.done = true;
    t.why = why;
    const nav = performance.getEntriesByType("navigation")[0];
    if (nav) {
      t.response_end = nav.responseEnd;
      t.dom_content_loaded = nav.domContentLoadedEventEnd;
    }
    t.requests = performance.getEntriesByType("resource")
      .filter((r) => r.initiatorType === "fetch" || r.initiatorType === "xmlhttprequest")
      .map((r) => ({ url: r.name, start: r.startTime, end: r.responseEnd }));
    t.url = location.href;
    resolve(t);
  };
  // The content is in this frame: a one-character marker inserted now is painted in the same
  // frame, and Element Timing reports when that frame was presented.
  const mark = () => {
    const marker = document.createElement("div");
    marker.setAttribute("elementtiming", "fmp-marker");
    marker.textContent = "\u00b7";
    Object.assign(marker.style, { position: "fixed", right: "2px", bottom: "2px", fontSize: "10px",
      lineHeight: "10px", color: "#888", pointerEvents: "none", zIndex: "2147483647" });
    document.body.append(marker);
    // A message posted now runs once this frame's main-thread rendering is done, or later,
    // behind tasks the page queued before it.
    const channel = new MessageChannel();
    channel.port1.onmessage = () => { t.after_frame = performance.now(); };
    channel.port2.postMessage(0);
    // A frame of thousands of rows (rq-dashboard's deep pages) takes seconds to present.
    const until = performance.now() + SPEC.timeout_ms;
    const wait = () => {
      if (t.presented !== undefined && t.after_frame !== undefined) finish("content");
      else if (performance.now() > until) { t.error = "the marker was never reported presented"; finish("failed"); }
      else setTimeout(wait, 5);
    };
    wait();
  };
  // When the content went into the DOM (a script's insertion, before any frame could show it).
  // A box's value is no mutation: for the simulate page this is the next mutation after it.
  const dom = new MutationObserver(() => {
    if (SPEC.checks.every(met)) { keep("dom", performance.now()); dom.disconnect(); }
  });
  dom.observe(document, { childList: true, subtree: true, characterData: true, attributes: true });
  const frame = (ts) => {
    for (const sel of SPEC.fail) {
      if (document.querySelector(sel)) { t.error = "the page shows " + sel; finish("failed"); return; }
    }
    if (SPEC.checks.every(met)) {
      t.frame = ts;
      t.seen = performance.now();
      mark();
      return;
    }
    if (performance.now() > SPEC.timeout_ms) {
      t.error = "no content within " + SPEC.timeout_ms + " ms; missing: " +
        SPEC.checks.filter((c) => !met(c)).map((c) => c.sel).join(", ");
      finish("timeout");
      return;
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
})();
"""

WAIT_SCRIPT = "const done = arguments[arguments.length - 1]; window.__fmpReady.then(done);"


# ---------------------------------------------------------------------------------------------
# Chromium through chromedriver's W3C HTTP API

class Chrome:
    """chromedriver (in a process group of its own, killed whole at the end) with one headless
    Chromium session; `load` measures one page in a fresh tab."""

    def __init__(self, chromium, chromedriver, work, timeout_s, cold):
        self.chromium, self.work, self.timeout_s, self.cold = chromium, work, timeout_s, cold
        self.port = bench.free_port()
        self.log = os.path.join(work, "chromedriver.log")
        self.proc = subprocess.Popen([chromedriver, f"--port={self.port}", f"--log-path={self.log}"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.session = None

    def _send(self, method, path, body=None, timeout=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or 2 * self.timeout_s + 60) as resp:
                return json.loads(resp.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise SystemExit(f"chromedriver {method} {path}: {e.code} {e.read()[:800]!r}")

    def cmd(self, method, path, body=None, timeout=None):
        return self._send(method, f"/session/{self.session}{path}", body, timeout)

    def start(self):
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"chromedriver did not start; see {self.log}")
                time.sleep(0.1)
        # The probe waits up to the timeout for the content, and as long again for its frame.
        caps = {"browserName": "chrome", "pageLoadStrategy": "eager",
                "timeouts": {"script": int(2 * self.timeout_s * 1000) + 5000, "pageLoad": int(self.timeout_s * 1000)},
                "goog:chromeOptions": {"binary": self.chromium, "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                    "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--window-size=1400,1000",
                    f"--user-data-dir={os.path.join(self.work, 'chromium-profile')}"]}}
        answer = self._send("POST", "/session", {"capabilities": {"alwaysMatch": caps}}, timeout=60)
        self.session = answer["sessionId"]
        self.version = answer["capabilities"].get("browserVersion")

    def fresh_tab(self):
        """A new tab, switched to, with the old one closed (the session keeps one tab)."""
        old = self.cmd("GET", "/window")
        new = self.cmd("POST", "/window/new", {"type": "tab"})["handle"]
        self.cmd("DELETE", "/window")  # closes the current (old) tab
        self.cmd("POST", "/window", {"handle": new})
        assert new != old

    def cdp(self, method, params):
        return self.cmd("POST", "/goog/cdp/execute", {"cmd": method, "params": params})

    def load(self, url, page, timeout_ms):
        """Opens url in a fresh tab with the probe; returns the probe's record."""
        self.fresh_tab()
        spec = {"checks": page.checks, "fail": page.fail, "timeout_ms": timeout_ms}
        self.cdp("Page.enable", {})
        self.cdp("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE.replace("__SPEC__", json.dumps(spec))})
        if self.cold:
            self.cdp("Network.enable", {})
            self.cdp("Network.setCacheDisabled", {"cacheDisabled": True})
        self.cmd("POST", "/url", {"url": url})
        return self.cmd("POST", "/execute/async", {"script": WAIT_SCRIPT, "args": []})

    def stop(self):
        if self.session:
            try:
                self._send("DELETE", f"/session/{self.session}", timeout=30)
            except (OSError, SystemExit):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


# ---------------------------------------------------------------------------------------------
# running and summing up

def sample(record, base):
    """The figures of one load (ms from navigation start), or what went wrong."""
    if record.get("error"):
        return {"error": f"{record.get('url')}: {record['error']}"}
    before = [r for r in record.get("requests", []) if r["end"] <= record["seen"]]
    if not before:
        # Every page here fetches its data: content seen before any answer is the shell.
        return {"error": f"{record.get('url')}: content seen before any API answer; the selectors match the shell"}
    slowest = max(before, key=lambda r: r["end"] - r["start"], default=None)
    round1 = (lambda v: None if v is None else round(v, 1))
    return {"fmp_ms": round1(record["presented"]), "frame_ms": round1(record["frame"]),
            "dom_ms": round1(record.get("dom")), "seen_ms": round1(record["seen"]),
            "after_frame_ms": round1(record["after_frame"]), "fcp_ms": round1(record.get("fcp")),
            "lcp_ms": round1(record.get("lcp")), "lcp_element": record.get("lcp_element"),
            "response_end_ms": round1(record.get("response_end")),
            "dom_content_loaded_ms": round1(record.get("dom_content_loaded")),
            "api_requests": len(before),
            "long_tasks_ms": round1(sum(x["duration"] for x in record.get("long_tasks", []) if x["start"] < record["presented"])),
            "last_response_ms": round1(max((r["end"] for r in before), default=None)),
            "slowest_request": None if slowest is None else {
                "url": slowest["url"].replace(base, ""), "ms": round1(slowest["end"] - slowest["start"])},
            "requests": [{"url": r["url"].replace(base, ""), "start_ms": round1(r["start"]), "end_ms": round1(r["end"])}
                         for r in record.get("requests", [])]}


def nearest_rank(values, q):
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def summary(samples):
    fmp = [s["fmp_ms"] for s in samples]
    mid = lambda key: (lambda v: nearest_rank(v, 0.5) if v else None)([s[key] for s in samples if s[key] is not None])  # noqa: E731
    slow = {}
    for s in samples:
        if s["slowest_request"]:
            slow.setdefault(s["slowest_request"]["url"], []).append(s["slowest_request"]["ms"])
    url, times = max(slow.items(), key=lambda kv: len(kv[1]), default=(None, []))
    return {"n": len(fmp), "median_ms": nearest_rank(fmp, 0.5), "p90_ms": nearest_rank(fmp, 0.9), "max_ms": max(fmp),
            "fcp_median_ms": mid("fcp_ms"), "lcp_median_ms": mid("lcp_ms"),
            "dom_content_loaded_median_ms": mid("dom_content_loaded_ms"), "last_response_median_ms": mid("last_response_ms"),
            "dom_median_ms": mid("dom_ms"), "seen_median_ms": mid("seen_ms"), "long_tasks_median_ms": mid("long_tasks_ms"), "after_frame_median_ms": mid("after_frame_ms"), "api_requests": samples[0]["api_requests"],
            "slowest_request": url, "slowest_request_median_ms": nearest_rank(times, 0.5) if times else None}


def order_of(pages):
    """Console pages, each followed by its rq-dashboard counterpart, then the rest of
    rq-dashboard's pages: the contenders interleaved."""
    by_name = {p.name: p for p in pages if p.contender == "dashboard"}
    out = []
    for p in pages:
        if p.contender == "retryd":
            out.append(p)
            if p.counterpart in by_name:
                out.append(by_name.pop(p.counterpart))
    return out + list(by_name.values())


def measure(args, chrome, pages, bases):
    timeout_ms = int(args.timeout * 1000)
    order = order_of(pages)
    samples = {p.key: [] for p in order}
    errors = {p.key: [] for p in order}

    def load(p, keep):
        s = sample(chrome.load(bases[p.contender] + p.path, p, timeout_ms), bases[p.contender])
        if "error" in s:
            print(f"  {p.key}: {s['error']}", flush=True)
            errors[p.key].append(s["error"])
        elif keep:
            samples[p.key].append(s)
        return s

    print(f"warming up: {len(order)} pages once, untimed", flush=True)
    for p in order:
        load(p, False)
    for r in range(args.rounds):
        this = [(p, load(p, True)) for p in (order if r % 2 == 0 else order[::-1])]
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
            f"{p.contender[0]}:{p.name[:12]} {s.get('fmp_ms', 'failed')}" for p, s in sorted(this, key=lambda x: order.index(x[0]))),
            flush=True)
    return {p.key: {"contender": p.contender, "page": p.name, "path": p.path, "content": p.checks,
                    "counterpart": p.counterpart, "summary": summary(samples[p.key]) if samples[p.key] else None,
                    "errors": errors[p.key], "samples": samples[p.key]}
            for p in order}


def figures(s):
    return (f"{s['median_ms']:.0f}", f"{s['p90_ms']:.0f}", f"{s['max_ms']:.0f}") if s else ("failed", "", "")


def verdict(v):
    s = v["summary"]
    if not s:
        return "MISSED (no load showed the content)"
    missed = s["p90_ms"] > TARGET_MS or v["errors"]
    return ("MISSED" if missed else "met") + f" (p90 <= {TARGET_MS})" + (f", {len(v['errors'])} failed loads" if v["errors"] else "")


def table(results, jobs):
    pages = results["pages"]
    rows = [("page", "median", "p90", "max", "rq-dashboard page", "its median", "ratio", "target")]
    for key, v in pages.items():
        if v["contender"] != "retryd":
            continue
        s = v["summary"]
        theirs = pages.get(f"dashboard: {v['counterpart']}") if v["counterpart"] else None
        t = theirs["summary"] if theirs else None
        rows.append((v["page"], *figures(s), v["counterpart"] or "—", f"{t['median_ms']:.0f}" if t else "—",
                     f"{s['median_ms'] / t['median_ms']:.2f}" if s and t else "—", verdict(v)))
    for key, v in pages.items():
        if v["contender"] == "dashboard":
            rows.append((f"rq-dashboard: {v['page']}", *figures(v["summary"]), "", "", "",
                         f"{len(v['errors'])} failed loads" if v["errors"] else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\nfirst meaningful paint at {jobs} failed jobs, ms from navigation start "
          f"({results['rounds']} rounds, {'cold' if results['cold_cache'] else 'warm'} HTTP cache):")
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(widths[j]) if j in (0, 4, 7) else c.rjust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print("\nwhere the time goes (medians, ms from navigation start): FCP, DOMContentLoaded, the last API answer "
          "before the content's frame, the content in the DOM, the rAF of the first frame finding it, its rendering done on the main thread, "
          "FMP (that frame presented); main-thread tasks over 50 ms before it (their sum); the API requests before it, "
          "the slowest")
    num = lambda v: "     -" if v is None else f"{v:>6.0f}"  # noqa: E731
    for key, v in pages.items():
        s = v["summary"]
        if not s:
            print(f"  {key[:56]:<56} failed: {v['errors'][0]}")
            continue
        print(f"  {key[:56]:<56} " + " ".join(num(s[k]) for k in (
            "fcp_median_ms", "dom_content_loaded_median_ms", "last_response_median_ms", "dom_median_ms", "seen_median_ms",
            "after_frame_median_ms", "median_ms", "long_tasks_median_ms")) + f"   {s['api_requests']} req; {s['slowest_request'] or '-'} "
              f"{num(s['slowest_request_median_ms']).strip()}")


# ---------------------------------------------------------------------------------------------
# setting up

def seed_audit(port, pairs):
    """Pause and resume pairs with a reason, so the audit page has rows to show (a seeded Redis
    has none: the policies leave every job failed). Ends resumed."""
    for i in range(pairs):
        index_api.call(port, "/api/v1/supervisor/pause?" + urllib.parse.urlencode({"reason": f"benchmark {i}"}), "POST")
        index_api.call(port, "/api/v1/supervisor/resume", "POST")


def pick_targets(server, port, queue):
    """The job both job pages show (the middle of `queue`, oldest first) and the deep page of
    `queue`: rq-dashboard's page number and the same jobs' offset. The page is 1000, as
    index_api.py's "dashboard's page 1000" (the middle of the queue when it has fewer pages):
    rq-dashboard 0.9.0 reads and renders all `offset + 8` jobs up to a page (its list_jobs turns
    per_page into offset + per_page - 1), so its deeper pages grow with the depth."""
    n_queue = server.client().zcard(f"rq:failed:{queue}")
    if not n_queue:
        raise SystemExit(f"no failed jobs in {queue}")
    deep_page = max(1, min(1000, n_queue // index_api.DASH_PER_PAGE // 2))
    deep_offset = (deep_page - 1) * index_api.DASH_PER_PAGE
    listed = index_api.call(port, "/api/v1/jobs/failed?" + urllib.parse.urlencode(
        {"queue": queue, "order": "oldest", "limit": 1, "offset": n_queue // 2}))[1]
    return listed["jobs"][0]["job_id"], deep_page, deep_offset


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--queues", default="default,emails,reports")
    ap.add_argument("--venv", default=os.environ.get("RQ_RETRYD_VENV_RQ2") or os.path.join(REPO, "target", "venv-rq2"),
                    help="RQ venv that seeds ($RQ_RETRYD_VENV_RQ2 or target/venv-rq2)")
    ap.add_argument("--dashboard-venv", default=os.path.join(REPO, "target", "venv-dashboard"))
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "rq-retryd"))
    ap.add_argument("--seed-procs", type=int, default=1, help="seeders in parallel (the snapshot's name says so)")
    ap.add_argument("--reseed", action="store_true", help="seed again even when the snapshot exists")
    ap.add_argument("--rounds", type=int, default=5, help="timed loads of every page (after one untimed)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds a page may take to show its content")
    ap.add_argument("--cold", action="store_true", help="disable the HTTP cache (default: warm, a returning operator)")
    ap.add_argument("--audit-entries", type=int, default=200, help="pause/resume entries written for the audit page")
    ap.add_argument("--chromium", default=os.environ.get("RQ_RETRYD_CHROMIUM") or "/usr/bin/chromium")
    ap.add_argument("--chromedriver", default=os.environ.get("RQ_RETRYD_CHROMEDRIVER") or "/usr/bin/chromedriver")
    ap.add_argument("--skip-dashboard", action="store_true")
    ap.add_argument("--only", action="append", help="measure only pages whose name holds this (repeatable)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    queues = args.queues.split(",")
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} is missing: cargo build --release (or --binary target/debug/rq-retryd)")
    for path in (args.chromium, args.chromedriver):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: install Debian's chromium and chromium-driver (./scripts/test.sh does)")
    started = time.perf_counter()
    work = tempfile.mkdtemp(prefix="rq-retryd-first-paint-")
    server = index_api.BigServer(os.path.join(work, "redis"))
    os.makedirs(server.dir)
    daemon = dash = chrome = None
    try:
        if not args.skip_dashboard:
            index_api.ensure_dashboard_venv(args.dashboard_venv)
        snap = index_api.seeded_snapshot(args, queues, work)
        server.restore(snap)
        daemon = index_api.Daemon(args.binary, server, work, "retryd")
        build_s, _, _ = daemon.start()
        print(f"rq-retryd ready (first scan) in {build_s:.1f}s", flush=True)
        seed_audit(daemon.port, args.audit_entries // 2)
        job_id, deep_page, deep_offset = pick_targets(server, daemon.port, queues[0])
        pages = console_pages(args.jobs, job_id, deep_page, deep_offset, queues[0])
        bases = {"retryd": f"http://127.0.0.1:{daemon.port}"}
        if not args.skip_dashboard:
            dash = index_api.Dashboard(args.dashboard_venv, server, work)
            dash.start()
            bases["dashboard"] = f"http://127.0.0.1:{dash.port}"
            pages += dashboard_pages(job_id, deep_page, queues[0])
        if args.only:
            pages = [p for p in pages if any(o in p.name for o in args.only)]
        chrome = Chrome(args.chromium, args.chromedriver, work, args.timeout, args.cold)
        chrome.start()
        results = {"jobs": args.jobs, "queues": queues, "argv": sys.argv[1:], "rounds": args.rounds,
                   "cold_cache": args.cold, "binary": args.binary, "chromium": chrome.version, "job_id": job_id,
                   "target_ms": TARGET_MS,
                   "measure": "first meaningful paint: ms from navigation start until the first frame whose rAF "
                              "finds every content selector of the page has finished rendering (a MessageChannel "
                              "message posted from that rAF callback)"}
        if dash:
            results["dashboard"] = index_api.dashboard_version(args.dashboard_venv)
        results["pages"] = measure(args, chrome, pages, bases)
        for v in results["pages"].values():
            if v["contender"] == "retryd":
                v["target"] = verdict(v)
        table(results, args.jobs)
        results["seconds"] = round(time.perf_counter() - started, 1)
        print(f"done in {results['seconds']} s", flush=True)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        failed = sum(len(v["errors"]) for v in results["pages"].values())
        if failed:
            print(f"{failed} loads never showed their page's content (see above)", flush=True)
        return 1 if failed else 0
    finally:
        for part in (chrome, dash, daemon):
            if part:
                part.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

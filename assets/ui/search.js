// The search box of every console page (issue 22, item 1): text goes to the failed jobs
// filtered by it (`q`, the API's case-insensitive search over exception line, function,
// description and id); text that is exactly the id of a job in a failed registry opens that
// job's page instead. The id is asked about on the single-job route that takes any id
// (`failed-jobs/{id}/explain`), so `clear`, `%2F` or non-ASCII ids go where they belong.
"use strict";

(() => {
  const { $, enc, get, ApiError } = RQ;
  const form = $("#search");
  const box = $("#search input[name=q]");
  box.value = new URLSearchParams(window.location.search).get("q") || "";

  /** Whether `text` is the id of a job in a failed registry (an undecodable one too). */
  async function isFailedJob(text) {
    try {
      await get(`failed-jobs/${enc(text)}/explain`);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) return true;
      return false;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = box.value;
    if (!text.trim()) return;
    form.setAttribute("aria-busy", "true");
    const target = (await isFailedJob(text)) ? `job?id=${enc(text)}` : `jobs?q=${enc(text)}`;
    window.location.assign(target);
  });
})();

// Scheduled parents with their next firing. Uses the runs list's `scheduled` filter where the
// server has it; otherwise reads a page of runs and keeps the scheduled ones.

import { ApiError, api } from "../api.js";
import { badge, errorBox, h, link, when } from "../dom.js";

export function render(main) {
  const body = h("tbody");
  const problem = h("div");
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Schedules"), problem,
    h("table", { id: "schedules-table" }, h("thead", {}, h("tr", {},
      ["parent run", "target", "every", "next firing", "fired", "status"].map((t) => h("th", {}, t)))), body),
    h("p", { class: "muted" }, "Create one from a bundle's Start form (\"schedule instead\"); cancel the parent run to stop it.")));

  async function load() {
    let items;
    try {
      try {
        items = (await api("/api/gateway/runs?scheduled=true&limit=200")).items;
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 400)) throw error;
        items = (await api("/api/gateway/runs?limit=500")).items.filter((r) => r.is_scheduled);
      }
    } catch (error) {
      problem.replaceChildren(errorBox(error));
      return;
    }
    problem.replaceChildren();
    body.replaceChildren(...items.map((r) => {
      const s = r.schedule || {};
      return h("tr", { "data-run-id": r.run_id },
        h("td", {}, link(`#/runs/${encodeURIComponent(r.run_id)}`, r.run_id.slice(0, 8))),
        h("td", {}, s.target_workflow_id || r.workflow_id),
        h("td", { class: "every" }, s.interval || (s.interval_s ? `${s.interval_s}s` : "") || (s.cron ? `${s.cron} (${s.timezone || "UTC"})` : "once")),
        h("td", { class: "next-firing" }, when(s.next_fire_at) || "—"),
        h("td", {}, String(s.fired_count ?? s.fired ?? "")),
        h("td", {}, badge(r.status)));
    }));
    if (!items.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No schedules.")));
  }
  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}

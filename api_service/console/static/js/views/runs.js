// The runs list: filters (status, workflow, session, parent, scheduled), newest first, paging.
// Paging follows whatever the server offers: `next_cursor` (sent back as `cursor`) or `next_offset`.

import { ApiError, api, query } from "../api.js";
import { badge, errorBox, h, link, when } from "../dom.js";

const STATUSES = ["", "running", "waiting", "completed", "failed", "cancelled"];
const PAGE = 25;

export function render(main) {
  const state = { filters: {}, pages: [null], page: 0 };
  const field = (name, label) => h("label", {}, label, h("input", { name, size: 18 }));
  const status = h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s }, s || "any")));
  const scheduled = h("input", { type: "checkbox", name: "scheduled" });
  const form = h("form", { class: "filters", id: "run-filters" },
    h("label", {}, "status", status),
    field("workflow_id", "workflow"), field("session_id", "session"), field("parent_run_id", "parent run"),
    h("label", { class: "inline" }, scheduled, "scheduled only"),
    h("button", { type: "submit" }, "Filter"));
  const body = h("tbody");
  const table = h("table", { id: "runs-table" },
    h("thead", {}, h("tr", {}, ["run", "workflow", "status", "created", "updated", "parent"].map((t) => h("th", {}, t)))), body);
  const prev = h("button", { type: "button", class: "secondary" }, "← Newer");
  const next = h("button", { type: "button", class: "secondary" }, "Older →");
  const info = h("span", { class: "muted" });
  const problem = h("div");
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Runs"), form, problem, table,
    h("div", { class: "actions" }, prev, next, info)));

  async function load() {
    problem.replaceChildren();
    const f = state.filters;
    const page = state.pages[state.page];
    const params = { limit: PAGE, status: f.status, workflow_id: f.workflow_id, session_id: f.session_id,
      parent_run_id: f.parent_run_id, ...(page || {}) };
    let listed;
    let clientFilter = false;
    try {
      try {
        listed = await api(`/api/gateway/runs${query({ ...params, scheduled: f.scheduled ? "true" : "" })}`);
      } catch (error) {
        // A server without the `scheduled` filter answers 400 naming its known parameters.
        if (!(f.scheduled && error instanceof ApiError && error.status === 400 && /scheduled/.test(error.message))) throw error;
        listed = await api(`/api/gateway/runs${query(params)}`);
        clientFilter = true;
      }
    } catch (error) {
      problem.replaceChildren(errorBox(error));
      body.replaceChildren();
      return;
    }
    const items = clientFilter ? listed.items.filter((r) => r.is_scheduled) : listed.items;
    body.replaceChildren(...items.map((r) => h("tr", { "data-run-id": r.run_id },
      h("td", {}, link(`#/runs/${encodeURIComponent(r.run_id)}`, r.run_id.slice(0, 8))),
      h("td", {}, r.workflow_id),
      h("td", {}, badge(r.status, r.queued ? "(queued)" : r.paused ? "(paused)" : "")),
      h("td", {}, when(r.created_at)), h("td", {}, when(r.updated_at)),
      h("td", {}, r.parent_run_id ? link(`#/runs/${encodeURIComponent(r.parent_run_id)}`, r.parent_run_id.slice(0, 8)) : ""))));
    if (!items.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No runs.")));
    const following = listed.next_cursor != null ? { cursor: listed.next_cursor }
      : listed.next_offset != null ? { offset: listed.next_offset } : null;
    state.pages[state.page + 1] = following;
    next.disabled = !following;
    prev.disabled = state.page === 0;
    info.textContent = `page ${state.page + 1}${clientFilter ? " (scheduled filtered here)" : ""}`;
    table.dataset.loaded = JSON.stringify(f);  // which filters the rows shown answer
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    state.filters = Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v).trim()]));
    state.filters.scheduled = scheduled.checked;
    state.pages = [null];
    state.page = 0;
    load();
  });
  next.addEventListener("click", () => { state.page += 1; load(); });
  prev.addEventListener("click", () => { state.page = Math.max(0, state.page - 1); load(); });
  load();
  const timer = setInterval(() => { if (state.page === 0) load(); }, 5000);
  return () => clearInterval(timer);
}

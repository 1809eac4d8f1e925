// The deployment: health (db, schema, problems), live runners, queue depth, capabilities.

import { api } from "../api.js";
import { errorBox, h, json } from "../dom.js";

export function render(main) {
  const health = h("div", { id: "health" });
  const runners = h("div", { id: "runners" });
  const caps = h("div", { id: "capabilities" });
  main.replaceChildren(
    h("section", { class: "card" }, h("h2", {}, "Deployment"), health),
    h("section", { class: "card" }, h("h3", {}, "Live runners"), runners),
    h("section", { class: "card" }, h("h3", {}, "Capabilities"), caps));

  async function load() {
    try {
      const response = await fetch("/api/health", { cache: "no-store" });
      const report = await response.json();
      health.replaceChildren(h("dl", { class: "kv" },
        h("dt", {}, "status"), h("dd", { id: "health-status" }, report.status),
        h("dt", {}, "version"), h("dd", {}, report.version || ""),
        h("dt", {}, "queue depth"), h("dd", { id: "queue-depth" }, String(report.queue_depth ?? "")),
        h("dt", {}, "database"), h("dd", {}, report.db ? `${report.db.path} (WAL ${report.db.wal ? "on" : "off"}, schema ${report.db.schema_version ?? report.db.current ?? ""})` : ""),
        h("dt", {}, "problems"), h("dd", {}, (report.problems || []).join("; ") || "none")));
      const live = report.runners || [];
      runners.replaceChildren(live.length ? h("table", {}, h("thead", {}, h("tr", {}, ["runner", "version", "host", "pid", "heartbeat age"].map((t) => h("th", {}, t)))),
        h("tbody", {}, live.map((r) => h("tr", {}, h("td", {}, r.runner_id), h("td", {}, r.version), h("td", {}, r.host),
          h("td", {}, String(r.pid)), h("td", {}, `${r.heartbeat_age_s ?? r.last_heartbeat_age_s ?? ""} s`))))) : h("p", { class: "error" }, "No live runner: started runs stay queued."));
    } catch (error) {
      health.replaceChildren(errorBox(error));
    }
    try {
      const found = await api("/api/gateway/discovery/capabilities");
      const entries = Object.entries(found.capabilities || {});
      caps.replaceChildren(h("table", {}, h("tbody", {}, entries.map(([name, value]) => h("tr", {},
        h("td", {}, name),
        h("td", {}, value && typeof value === "object" && "installed" in value
          ? `${value.installed ? "installed" : "not installed"}${value.version ? ` ${value.version}` : ""}` : json(value)))))));
    } catch (error) {
      caps.replaceChildren(errorBox(error));
    }
  }
  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}

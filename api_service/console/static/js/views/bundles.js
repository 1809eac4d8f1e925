// Bundles: the catalogue (newest versions, or all, deprecated too), upload a .flow, deprecate /
// undeprecate, and a Start link per entrypoint.

import { api, query } from "../api.js";
import { errorBox, h, link, when } from "../dom.js";

export function render(main) {
  const allVersions = h("input", { type: "checkbox", name: "all_versions" });
  const deprecated = h("input", { type: "checkbox", name: "include_deprecated" });
  const body = h("tbody");
  const problem = h("div");
  const file = h("input", { type: "file", name: "file", accept: ".flow,.zip", required: true });
  const overwrite = h("input", { type: "checkbox", name: "overwrite" });
  const uploadState = h("span", { class: "muted", id: "upload-state" });
  const upload = h("form", { class: "filters", id: "upload-form" },
    h("label", {}, ".flow bundle", file), h("label", { class: "inline" }, overwrite, "overwrite"),
    h("button", { type: "submit" }, "Upload"), uploadState);
  main.replaceChildren(
    h("section", { class: "card" }, h("h2", {}, "Bundles"),
      h("div", { class: "actions" }, h("label", { class: "inline" }, allVersions, "all versions"),
        h("label", { class: "inline" }, deprecated, "deprecated too")),
      problem,
      h("table", { id: "bundles-table" }, h("thead", {}, h("tr", {}, ["bundle", "entrypoints", "created", ""].map((t) => h("th", {}, t)))), body)),
    h("section", { class: "card" }, h("h3", {}, "Upload"), upload));

  async function load() {
    problem.replaceChildren();
    try {
      const listed = await api(`/api/gateway/bundles${query({ all_versions: allVersions.checked ? "true" : "", include_deprecated: deprecated.checked ? "true" : "" })}`);
      body.replaceChildren(...listed.items.map(row));
      if (!listed.items.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No bundles.")));
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  }

  function row(b) {
    const isDeprecated = Boolean(b.deprecated || b.deprecation);
    const reason = b.deprecation?.reason || b.deprecated_reason || "";
    const toggle = h("button", { type: "button", class: "secondary", onclick: async () => {
      const action = isDeprecated ? "undeprecate" : "deprecate";
      const body = isDeprecated ? {} : { reason: prompt("Why deprecate it?") || "deprecated from the console" };
      try {
        await api(`/api/gateway/bundles/${encodeURIComponent(b.bundle_id)}/${action}`, { method: "POST", body });
        load();
      } catch (error) {
        problem.replaceChildren(errorBox(error));
      }
    } }, isDeprecated ? "Undeprecate" : "Deprecate");
    return h("tr", { "data-bundle": b.bundle_ref },
      h("td", {}, h("code", {}, b.bundle_ref), isDeprecated ? h("div", { class: "error" }, `deprecated ${reason}`) : null),
      h("td", {}, (b.entrypoints || []).map((e) => h("div", {},
        link(`#/start/${encodeURIComponent(b.bundle_ref)}/${encodeURIComponent(e.flow_id)}`, `Start ${e.name || e.flow_id}`),
        e.description ? h("span", { class: "muted" }, ` — ${e.description}`) : null))),
      h("td", {}, when(b.created_at)),
      h("td", {}, toggle));
  }

  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const form = new FormData();
    form.append("file", file.files[0]);
    form.append("overwrite", overwrite.checked ? "true" : "false");
    uploadState.textContent = "uploading…";
    try {
      const stored = await api("/api/gateway/bundles/upload", { method: "POST", body: form });
      uploadState.textContent = `stored ${stored.bundle_ref || stored.bundle_id || ""}`;
      load();
    } catch (error) {
      uploadState.replaceChildren(errorBox(error));
    }
  });
  allVersions.addEventListener("change", load);
  deprecated.addEventListener("change", load);
  load();
  return null;
}

// Start a run (or a schedule) of one bundle entrypoint, with a form built from its input schema:
// numbers, booleans, text, and JSON for objects, arrays and untyped pins.

import { api } from "../api.js";
import { errorBox, h } from "../dom.js";

function inputFor(pin) {
  const name = `in:${pin.id}`;
  const type = (pin.type || "any").toLowerCase();
  const initial = pin.default;
  if (type === "boolean") return h("input", { type: "checkbox", name, checked: Boolean(initial), "data-type": type });
  if (type === "number" || type === "integer") return h("input", { type: "number", step: "any", name, value: initial ?? "", "data-type": type });
  if (type === "string" || type === "text") return h("input", { name, value: initial ?? "", size: 40, "data-type": type });
  return h("textarea", { name, rows: 2, cols: 40, "data-type": type, placeholder: "JSON (or plain text)" },
    initial === undefined || initial === null ? "" : JSON.stringify(initial));
}

function valueOf(el) {
  const type = el.dataset.type;
  if (type === "boolean") return el.checked;
  const raw = el.value.trim();
  if (raw === "") return undefined;
  if (type === "number" || type === "integer") return Number(raw);
  if (type === "string" || type === "text") return el.value;
  try { return JSON.parse(raw); } catch (_) { return raw; }  // an untyped pin takes text as is
}

export function render(main, bundleRef, flowId) {
  const problem = h("div", { id: "start-problem" });
  const fields = h("div");
  const session = h("input", { name: "session_id", size: 30 });
  const schedule = h("input", { type: "checkbox", name: "schedule", id: "schedule-toggle" });
  const interval = h("input", { name: "interval", placeholder: "30s, 15m, 1h", size: 10 });
  const repeat = h("input", { name: "repeat_count", type: "number", min: 1, size: 6 });
  const form = h("form", { id: "start-form" }, fields,
    h("label", {}, "session id (optional)", session),
    h("fieldset", {}, h("legend", {}, h("label", { class: "inline" }, schedule, "schedule instead of starting once")),
      h("label", {}, "interval", interval), h("label", {}, "repeat count", repeat)),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "start-submit" }, "Start")));
  main.replaceChildren(h("section", { class: "card" },
    h("h2", {}, "Start ", h("code", {}, `${bundleRef}:${flowId}`)), problem, form));

  const [bundleId, version] = bundleRef.split("@");
  const versionQuery = version ? `?bundle_version=${encodeURIComponent(version)}` : "";
  api(`/api/gateway/bundles/${encodeURIComponent(bundleId)}/flows/${encodeURIComponent(flowId)}/input_schema${versionQuery}`)
    .then((schema) => {
      fields.replaceChildren(...schema.inputs.map((pin) => h("label", { "data-pin": pin.id },
        `${pin.label || pin.id} (${pin.type || "any"})`, inputFor(pin))));
      if (!schema.inputs.length) fields.replaceChildren(h("p", { class: "muted" }, "This entrypoint takes no input."));
    })
    .catch((error) => problem.replaceChildren(errorBox(error)));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const inputData = {};
    for (const el of fields.querySelectorAll("[name^='in:']")) {
      const value = valueOf(el);
      if (value !== undefined) inputData[el.name.slice(3)] = value;
    }
    const body = { bundle_id: bundleRef, flow_id: flowId, input_data: inputData };
    if (session.value.trim()) body.session_id = session.value.trim();
    let path = "/api/gateway/runs/start";
    if (schedule.checked) {
      path = "/api/gateway/runs/schedule";
      body.start_at = "now";
      if (interval.value.trim()) body.interval = interval.value.trim();
      if (repeat.value) body.repeat_count = Number(repeat.value);
    }
    try {
      const started = await api(path, { method: "POST", body });
      location.hash = `#/runs/${encodeURIComponent(started.run_id)}`;
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  });
  return null;
}

// One run: its state, input, output or error, the live ledger timeline (SSE), the pending question
// with its answers, pause / resume / cancel, child runs and artifacts (images, audio, video inline).

import { api, blobUrl, command, query } from "../api.js";
import { badge, errorBox, h, json, link, seconds, when } from "../dom.js";
import { followLedger } from "../sse.js";

const TERMINAL = ["completed", "failed", "cancelled"];

function stepRow(cursor, record) {
  const effect = record.effect && record.effect.type ? record.effect.type : "";
  return h("li", { "data-cursor": cursor, "data-node": record.node_id || "", "data-step-status": record.status },
    h("code", {}, `#${cursor}`),
    h("span", {}, record.node_id || ""),
    badge(record.status || ""),
    h("span", {}, effect),
    h("span", { class: "muted" }, seconds(record.started_at, record.ended_at)),
    record.error ? h("span", { class: "detail error" }, record.error) : null);
}

export function render(main, runId) {
  const runPath = `/api/gateway/runs/${encodeURIComponent(runId)}`;
  const header = h("div", { id: "run-header" });
  const problem = h("div");
  const actionState = h("span", { class: "muted", id: "action-state" });
  const pause = h("button", { type: "button", class: "secondary", id: "pause" }, "Pause");
  const resume = h("button", { type: "button", class: "secondary", id: "resume" }, "Resume");
  const cancel = h("button", { type: "button", class: "danger", id: "cancel" }, "Cancel");
  const ask = h("div", { id: "ask" });
  const input = h("div", { id: "run-input" });
  const result = h("div", { id: "run-result" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const streamState = h("span", { class: "stream-state muted", id: "stream-state" });
  const children = h("div", { id: "children" });
  const artifacts = h("div", { id: "artifacts" });
  main.replaceChildren(
    h("section", { class: "card" }, header, problem, h("div", { class: "actions" }, pause, resume, cancel, actionState)),
    ask,
    h("div", { class: "row" },
      h("section", { class: "card" }, h("h3", {}, "Input"), input),
      h("section", { class: "card" }, h("h3", {}, "Output / error"), result)),
    h("section", { class: "card" }, h("h3", {}, "Timeline ", streamState), timeline),
    h("div", { class: "row" },
      h("section", { class: "card" }, h("h3", {}, "Child runs"), children),
      h("section", { class: "card" }, h("h3", {}, "Artifacts"), artifacts)));

  const urls = [];
  const shownArtifacts = new Set();
  let view = null;
  let refreshTimer = null;
  let closed = false;

  function showRun(run) {
    view = run;
    header.replaceChildren(
      h("h2", {}, "Run ", h("code", {}, run.run_id), " ", badge(run.status, run.queued ? "(queued)" : "")),
      h("dl", { class: "kv" },
        h("dt", {}, "workflow"), h("dd", {}, run.workflow_id),
        h("dt", {}, "current node"), h("dd", {}, run.current_node || ""),
        h("dt", {}, "created"), h("dd", {}, when(run.created_at)),
        h("dt", {}, "updated"), h("dd", {}, when(run.updated_at)),
        h("dt", {}, "session"), h("dd", {}, run.session_id || ""),
        h("dt", {}, "parent"), h("dd", {}, run.parent_run_id ? link(`#/runs/${encodeURIComponent(run.parent_run_id)}`, run.parent_run_id) : ""),
        h("dt", {}, "paused"), h("dd", { id: "paused" }, run.paused ? `yes${run.pause_reason ? ` (${run.pause_reason})` : ""}` : "no"),
        run.is_scheduled ? [h("dt", {}, "next firing"), h("dd", {}, when(run.schedule?.next_fire_at) || "—")] : null));
    const terminal = TERMINAL.includes(run.status);
    pause.disabled = terminal || run.paused;
    resume.disabled = terminal || !run.paused;
    cancel.disabled = terminal;
    result.replaceChildren(run.error ? h("p", { class: "error", id: "run-error" }, run.error) : json(run.output));
    showAsk(run);
  }

  let askKey = null;

  function showAsk(run) {
    const waiting = run.waiting;
    const asking = waiting && waiting.reason === "user" && !run.paused;
    // Re-rendered only when the question changes: a refresh must not wipe an answer being typed.
    const key = asking ? JSON.stringify([waiting.wait_key, waiting.prompt, waiting.choices]) : null;
    if (key === askKey) return;
    askKey = key;
    if (!asking) {
      ask.replaceChildren();
      return;
    }
    const answer = async (value) => {
      actionState.textContent = "sending answer…";
      try {
        const sent = await command(runId, "resume", { wait_key: waiting.wait_key, payload: { response: value } });
        actionState.textContent = `answer sent (command #${sent.seq})`;
        ask.replaceChildren(h("p", { class: "muted" }, "Answer sent; waiting for the runner…"));
      } catch (error) {
        actionState.replaceChildren(errorBox(error));
      }
    };
    const choices = (waiting.choices || []).map((choice) => {
      const label = typeof choice === "string" ? choice : choice.label || choice.value || JSON.stringify(choice);
      const value = typeof choice === "string" ? choice : choice.value ?? label;
      return h("button", { type: "button", class: "choice", onclick: () => answer(value) }, label);
    });
    const free = waiting.allow_free_text !== false || !choices.length;
    const text = h("input", { name: "answer", id: "answer-text", size: 40 });
    const form = free ? h("form", { class: "actions", id: "answer-form", onsubmit: (e) => { e.preventDefault(); answer(text.value); } },
      text, h("button", { type: "submit" }, "Answer")) : null;
    ask.replaceChildren(h("section", { class: "card ask", id: "ask-card" },
      h("h3", {}, "The run asks"), h("p", { id: "ask-prompt" }, waiting.prompt || "(no prompt)"),
      choices.length ? h("div", { class: "actions", id: "ask-choices" }, choices) : null, form));
  }

  async function refresh() {
    try {
      showRun(await api(runPath));
      problem.replaceChildren();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
    refreshSide();
  }

  async function refreshSide() {
    try {
      const kids = await api(`/api/gateway/runs${query({ parent_run_id: runId, limit: 100 })}`);
      children.replaceChildren(kids.items.length ? h("table", {}, h("tbody", {}, kids.items.map((k) => h("tr", {},
        h("td", {}, link(`#/runs/${encodeURIComponent(k.run_id)}`, k.run_id.slice(0, 8))),
        h("td", {}, k.workflow_id), h("td", {}, badge(k.status)))))) : h("p", { class: "muted" }, "None."));
    } catch (error) {
      children.replaceChildren(errorBox(error));
    }
    try {
      const listed = await api(`${runPath}/artifacts`);
      if (!listed.items.length) artifacts.replaceChildren(h("p", { class: "muted" }, "None."));
      else if (!shownArtifacts.size) artifacts.replaceChildren();
      for (const item of listed.items) {
        if (shownArtifacts.has(item.artifact_id)) continue;
        shownArtifacts.add(item.artifact_id);
        artifacts.append(await artifactCard(item));
      }
    } catch (error) {
      artifacts.replaceChildren(errorBox(error));
    }
  }

  async function artifactCard(item) {
    const type = item.content_type || "";
    const card = h("div", { class: "artifact", "data-artifact-id": item.artifact_id },
      h("p", {}, h("code", {}, item.artifact_id.slice(0, 12)), ` ${type} · ${item.size_bytes} bytes`));
    const content = `${runPath}/artifacts/${encodeURIComponent(item.artifact_id)}/content`;
    if (/^(image|audio|video)\//.test(type)) {
      try {
        const url = await blobUrl(content);
        urls.push(url);
        if (type.startsWith("image/")) card.append(h("img", { src: url, alt: item.artifact_id }));
        else if (type.startsWith("audio/")) card.append(h("audio", { src: url, controls: true }));
        else card.append(h("video", { src: url, controls: true, autoplay: true, muted: true, loop: true }));
      } catch (error) {
        card.append(errorBox(error));
      }
    }
    return card;
  }

  function soon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => { if (!closed) refresh(); }, 250);
  }

  async function send(type, payload) {
    actionState.textContent = `sending ${type}…`;
    try {
      const sent = await command(runId, type, payload);
      actionState.textContent = `${type} sent (command #${sent.seq})`;
      watchCommand(sent, type);
    } catch (error) {
      actionState.replaceChildren(errorBox(error));
    }
  }

  async function watchCommand(_sent, type) {
    for (let i = 0; i < 40 && !closed; i += 1) {
      await new Promise((r) => setTimeout(r, 250));
      await refresh();
      if ((type === "cancel" && view?.status === "cancelled") || (type === "pause" && view?.paused)
        || (type === "resume" && !view?.paused)) return;
    }
  }

  pause.addEventListener("click", () => send("pause", { reason: "paused from the console" }));
  resume.addEventListener("click", () => send("resume", {}));
  cancel.addEventListener("click", () => send("cancel", { reason: "cancelled from the console" }));

  api(`${runPath}/input_data`).then((data) => input.replaceChildren(json(data.input_data)))
    .catch((error) => input.replaceChildren(errorBox(error)));
  refresh();
  const stream = followLedger(runId, 0, {
    onStep(cursor, record) {
      timeline.append(stepRow(cursor, record));
      soon();
    },
    onDone(done) {
      timeline.dataset.done = done.status;
      soon();
    },
    onState(text) { streamState.textContent = `(${text})`; streamState.dataset.state = text; },
    onError(error) { streamState.replaceChildren(errorBox(error)); },
  });
  // Child runs and artifacts also come from work outside this run's ledger (media jobs): polled.
  const sideTimer = setInterval(() => { if (!closed) refreshSide(); }, 3000);
  return () => {
    closed = true;
    clearInterval(sideTimer);
    stream.close();
    clearTimeout(refreshTimer);
    urls.forEach((u) => URL.revokeObjectURL(u));
  };
}

// The ledger stream over fetch() (EventSource cannot send an Authorization header). A dropped
// connection (server restart, network) is resumed with Last-Event-ID = the last cursor shown, and
// a record is shown only when its cursor is the next one: nothing lost, nothing repeated.

import { authHeaders } from "./api.js";

function parseFrame(frame) {
  const event = { id: null, event: "message", data: "", comment: null };
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) { event.comment = line.slice(1).trim(); continue; }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") event.id = value;
    else if (field === "event") event.event = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "retry") event.retry = Number(value);
  }
  return event;
}

// handlers: onStep(cursor, record), onDone({status, cursor}), onState(text), onError(error)
export function followLedger(runId, after, handlers) {
  let cursor = after;
  let stopped = false;
  let controller = null;
  let retryMs = 1000;
  let attempts = 0;

  async function connect() {
    while (!stopped) {
      controller = new AbortController();
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (cursor > 0) headers["Last-Event-ID"] = String(cursor);
      try {
        handlers.onState?.(attempts ? "reconnecting" : "connecting");
        const response = await fetch(`/api/gateway/runs/${encodeURIComponent(runId)}/ledger/stream`, {
          headers, signal: controller.signal, cache: "no-store",
        });
        if (!response.ok) {
          let detail = response.statusText;
          try { detail = (await response.json()).detail; } catch (_) { /* keep the status text */ }
          const error = new Error(`${response.status}: ${detail}`);
          error.status = response.status;
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            handlers.onError?.(error);  // 401 / 403 / 404 will not heal by retrying
            return;
          }
          throw error;
        }
        attempts = 0;
        handlers.onState?.("live");
        if (await read(response.body)) return;  // done
      } catch (error) {
        if (stopped) return;
        handlers.onState?.(`disconnected (${error.message || error}); retrying`);
      }
      attempts += 1;
      await new Promise((resolve) => setTimeout(resolve, Math.min(retryMs * attempts, 5000)));
    }
  }

  // True when `done` arrived; false when the stream ended without it (reconnect).
  async function read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let split;
      while ((split = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, split);
        buffer = buffer.slice(split + 2);
        const event = parseFrame(frame);
        if (event.retry) retryMs = event.retry;
        if (event.event === "step" && event.data) {
          const data = JSON.parse(event.data);
          if (data.cursor === cursor + 1) {  // the next one: show it; older ones were shown already
            cursor = data.cursor;
            handlers.onStep(cursor, data.record);
          } else if (data.cursor > cursor + 1) {
            throw new Error(`gap in the stream: expected ${cursor + 1}, got ${data.cursor}`);
          }
        } else if (event.event === "done" && event.data) {
          handlers.onDone?.(JSON.parse(event.data));
          handlers.onState?.("finished");
          stopped = true;
          return true;
        }
      }
    }
  }

  connect();
  return {
    get cursor() { return cursor; },
    close() { stopped = true; controller?.abort(); },
  };
}

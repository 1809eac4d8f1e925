// A tiny element builder: h("td", {class: "x", onclick: fn}, "text", child). Text is always set as
// text (never parsed as HTML), so data from runs cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function json(value) {
  return h("pre", {}, value === undefined ? "" : JSON.stringify(value, null, 2));
}

export function badge(status, extra = "") {
  return h("span", { class: `badge ${status}`, "data-status": status }, extra ? `${status} ${extra}` : status);
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function seconds(startIso, endIso) {
  const start = Date.parse(startIso);
  const end = Date.parse(endIso);
  if (Number.isNaN(start) || Number.isNaN(end)) return "";
  const s = (end - start) / 1000;
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.describe ? error.describe() : String(error.message || error));
}

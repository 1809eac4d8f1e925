// The console's shell: the token gate and a hash router (#/runs, #/runs/<id>, #/bundles,
// #/start/<bundle>/<flow>, #/schedules, #/deployment). Each view renders into <main> and returns a
// cleanup function (open streams close when the operator navigates away).

import { clearToken, getToken, onUnauthorized, setToken } from "./api.js";
import * as bundles from "./views/bundles.js";
import * as deployment from "./views/deployment.js";
import * as run from "./views/run.js";
import * as runs from "./views/runs.js";
import * as schedules from "./views/schedules.js";
import * as start from "./views/start.js";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const logout = document.getElementById("logout");
let cleanup = null;

const ROUTES = [
  [/^#\/runs\/([^/]+)$/, run, "runs"],
  [/^#\/runs\/?$/, runs, "runs"],
  [/^#\/bundles\/?$/, bundles, "bundles"],
  [/^#\/start\/([^/]+)\/([^/]+)$/, start, "bundles"],
  [/^#\/schedules\/?$/, schedules, "schedules"],
  [/^#\/deployment\/?$/, deployment, "deployment"],
];

export function notify(text, { error = false } = {}) {
  notice.textContent = text;
  notice.className = error ? "error" : "";
  notice.hidden = !text;
}

function showLogin(message) {
  cleanup?.();
  cleanup = null;
  logout.hidden = true;
  main.replaceChildren(document.getElementById("login-template").content.cloneNode(true));
  const form = document.getElementById("login");
  if (message) {
    const box = document.getElementById("login-error");
    box.textContent = message;
    box.hidden = false;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = form.elements.token.value.trim();
    if (!token) return;
    setToken(token);
    form.reset();
    route();
  });
}

function route() {
  if (!getToken()) {
    showLogin();
    return;
  }
  logout.hidden = false;
  notify("");
  const hash = location.hash || "#/runs";
  cleanup?.();
  cleanup = null;
  for (const [pattern, view, nav] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    const params = match.slice(1).map(decodeURIComponent);
    cleanup = view.render(main, ...params) || null;
    return;
  }
  location.hash = "#/runs";
}

onUnauthorized(() => {
  clearToken();
  showLogin("The token was refused (401). Type it again.");
});

logout.addEventListener("click", () => {
  clearToken();
  showLogin();
});

window.addEventListener("hashchange", route);
route();

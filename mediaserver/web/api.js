// The REST API (/api/v1) as the People mode uses it: one call helper, the error
// shape of api/errors.py ({error: {code, message, field}}) turned into words next to
// the control it is about, and the signed-in session kept in sessionStorage (this tab
// only, gone when it closes: never localStorage).
"use strict";

export const PREFIX = "/api/v1";
const SESSION_KEY = "mediaserver.people";

/** One API call. Resolves to {ok, status, data, error}: never throws for an HTTP
 * error, so every caller shows the server's answer; `error` is {code, message, field}. */
export async function api(method, path, { token = null, json, body, type } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  } else if (type) {
    headers["Content-Type"] = type;
  }
  let resp;
  try {
    resp = await fetch(PREFIX + path, { method, headers, body: payload, cache: "no-store" });
  } catch {
    return {
      ok: false, status: 0, data: null,
      error: { code: "offline", message: "cannot reach the server", field: null },
    };
  }
  let data = null;
  const ctype = resp.headers.get("Content-Type") || "";
  if (ctype.startsWith("application/json")) {
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
  } else if (resp.ok && resp.status !== 204) {
    data = await resp.blob();
  }
  if (resp.ok) return { ok: true, status: resp.status, data, error: null };
  const err = data && data.error && typeof data.error === "object" ? data.error : {};
  return {
    ok: false, status: resp.status, data,
    error: {
      code: typeof err.code === "string" ? err.code : "error",
      message: typeof err.message === "string" ? err.message : `the server answered ${resp.status}`,
      field: typeof err.field === "string" ? err.field : null,
    },
  };
}

/** The route itself is missing (Starlette's 404, not a resource's "not_found"). */
export function noSuchEndpoint(res) {
  return res.status === 404 && res.error && res.error.message === "no such endpoint";
}

// ---- errors next to the control -----------------------------------------------------

/** Clear a form's error lines. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll(".error")) el.textContent = "";
}

/** Show an API error in `form`: next to the field it names when the form has a line
 * for it (data-error-for=FIELD), else on the form's own line (data-error-for=form). */
export function showError(form, error, prefix = "") {
  clearErrors(form);
  const text = prefix + sentence(error.message);
  const line =
    (error.field && form.querySelector(`.error[data-error-for="${cssName(error.field)}"]`)) ||
    form.querySelector('.error[data-error-for="form"]');
  if (line) line.textContent = text;
  const input = error.field && form.querySelector(`[name="${cssName(error.field)}"]`);
  if (input) input.focus();
}

function sentence(text) {
  if (!text) return "";
  return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
}

function cssName(field) {
  return String(field).replace(/[^A-Za-z0-9_.-]/g, "");
}

// ---- the session in this tab ----------------------------------------------------------

/** {token, id, username} or null. */
export function loadSession() {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    const s = raw ? JSON.parse(raw) : null;
    if (s && typeof s.token === "string" && typeof s.id === "string") return s;
  } catch {
    // storage off or a broken entry: signed out
  }
  return null;
}

export function saveSession(session) {
  try {
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // storage off: the session lasts as long as the page
  }
}

// ---- small DOM helpers ----------------------------------------------------------------

export const $ = (id) => document.getElementById(id);

/** An element with text (never HTML) and optional class. */
export function el(tag, text = "", className = "") {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

/** Comma-separated interests as the store takes them (it lower-cases and de-duplicates). */
export function parseList(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

/** A Blob as a data: URL (the CSP allows img-src 'self' data:, not blob:). */
export function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export function day(iso) {
  return typeof iso === "string" ? iso.slice(0, 10) : "";
}

/** Run `render()`, which rebuilds the items (li[data-id]) of `list`: a keyboard user's
 * focus on a button of an item stays on the same button of the rebuilt item (the lists
 * are re-rendered by the 10 s poll). */
export function keepFocus(list, render) {
  const active = document.activeElement;
  const li = list.contains(active) && active.closest ? active.closest("li[data-id]") : null;
  const id = li ? li.dataset.id : null;
  const label = id ? active.getAttribute("aria-label") || active.textContent : null;
  render();
  if (!id) return;
  const again = [...list.querySelectorAll("li[data-id]")].find((x) => x.dataset.id === id);
  if (!again) return;
  const button = [...again.querySelectorAll("button")].find(
    (b) => (b.getAttribute("aria-label") || b.textContent) === label,
  );
  (button || again.querySelector("button") || list).focus();
}

// People mode: the inbox (GET /notices, newest first, paged by cursor). Every notice the
// service mails is here too (verify e-mail, new sign-in, privacy requests, connection
// requests, missed calls, inactivity, policy changes); "Mark read" marks one read.
"use strict";

import { $, el, keepFocus } from "./api.js";

const PAGE = 20;

const ui = {
  list: $("inbox-list"),
  none: $("inbox-none"),
  more: $("inbox-more"),
  error: $("inbox-error"),
};

let app = null;
let shownFor = null;
let next = null; // the cursor of the next (older) page

export function init(shared) {
  app = shared;
  ui.more.addEventListener("click", () => load(false));
}

export function show(_, profile) {
  if (shownFor !== profile.id) {
    shownFor = profile.id;
    load(true);
  }
}

export function reset() {
  shownFor = null;
  next = null;
  ui.list.replaceChildren();
  ui.none.hidden = false;
  ui.more.hidden = true;
  ui.error.textContent = "";
}

/** The newest page again (on the poll). Older pages the reader opened stay until then. */
export function refresh() {
  return load(true);
}

async function load(fresh) {
  if (!app.session) return;
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (!fresh && next) params.set("cursor", next);
  const res = await app.call("GET", `/notices?${params}`);
  if (!app.session) return;
  if (!res.ok) {
    ui.error.textContent = `Cannot load your inbox: ${res.error.message}.`;
    return;
  }
  ui.error.textContent = "";
  const items = res.data.notices.map(item);
  if (fresh) keepFocus(ui.list, () => ui.list.replaceChildren(...items));
  else ui.list.append(...items);
  next = res.data.next;
  ui.more.hidden = !next;
  ui.none.hidden = ui.list.children.length > 0;
}

function item(n) {
  const li = el("li", "", n.read_at ? "item notice-item" : "item notice-item unread");
  li.dataset.id = n.id;
  li.dataset.kind = n.kind;
  const title = el("span", n.subject, "item-title");
  li.append(title, el("span", String(n.at).slice(0, 16).replace("T", " ") + " UTC", "hint"),
    el("p", n.body, "notice-body"));
  if (!n.read_at) {
    const b = el("button", "Mark read", "btn subtle");
    b.type = "button";
    b.setAttribute("aria-label", `Mark read: ${n.subject}`);
    b.addEventListener("click", () => markRead(n, li, b));
    li.append(b);
  }
  return li;
}

async function markRead(n, li, button) {
  button.disabled = true;
  const res = await app.call("POST", `/notices/${encodeURIComponent(n.id)}/read`);
  if (!res.ok) {
    button.disabled = false;
    ui.error.textContent = `Not marked: ${res.error.message}.`;
    return;
  }
  li.classList.remove("unread");
  button.remove();
}

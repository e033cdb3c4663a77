// People mode: conversations with connections. The list and the history come over
// REST (GET /conversations, .../messages paged by cursor); messages are sent over the
// People socket (`direct`) and arrive live on every open page of both sides. The
// switches are each side's own: Keep history (off deletes your copy) and Save
// conversation (exempt from the 6-month purge).
"use strict";

import { $, clearErrors, el, keepFocus, showError } from "./api.js";
import * as socket from "./people-socket.js";

const PAGE = 30;
const DELETED = "Deleted user";

const ui = {
  list: $("conversation-list"),
  none: $("conversations-none"),
  box: $("conversation-box"),
  title: $("conversation-title"),
  keep: $("conversation-keep"),
  saved: $("conversation-saved"),
  older: $("conversation-older"),
  log: $("conversation-log"),
  form: $("conversation-form"),
  input: $("conversation-input"),
  send: $("conversation-send"),
  call: $("conversation-call"),
  remove: $("conversation-delete"),
};

let app = null;
let shownFor = null;
let conversations = []; // as GET /conversations lists them
let open = null; // the open conversation
let cursor = null; // next_cursor of the oldest page shown
const pending = []; // [{conversation_id, text}] sent, waiting for direct_sent

export function init(shared) {
  app = shared;
  app.openConversation = openConversation;
  app.refreshConversations = refresh;
  ui.form.addEventListener("submit", onSend);
  ui.older.addEventListener("click", () => loadPage(false));
  ui.keep.addEventListener("change", () => setFlag("keep_history", ui.keep));
  ui.saved.addEventListener("change", () => setFlag("saved", ui.saved));
  ui.remove.addEventListener("click", onDelete);
  ui.call.addEventListener("click", () => {
    if (open) app.startCall(open.id, peerName(open));
  });
  socket.on("direct", onDirect);
  socket.on("direct_sent", onSent);
  socket.on("error", onError);
}

export function show(_, profile) {
  if (shownFor !== profile.id) {
    shownFor = profile.id;
    refresh();
  }
}

export function reset() {
  shownFor = null;
  conversations = [];
  open = null;
  cursor = null;
  pending.length = 0;
  ui.list.replaceChildren();
  ui.none.hidden = false;
  ui.box.hidden = true;
  ui.log.replaceChildren();
  clearErrors(ui.form);
}

function peerName(c) {
  if (!c.peer || c.peer.deleted) return DELETED;
  const handle = c.peer.handle || DELETED;
  return c.peer.name ? `${c.peer.name} (${handle})` : handle;
}

// ---- the list --------------------------------------------------------------------------------

export async function refresh() {
  if (!app.session) return;
  const res = await app.call("GET", "/conversations");
  if (!app.session || !res.ok) return;
  conversations = Array.isArray(res.data.conversations) ? res.data.conversations : [];
  renderList();
  if (open) {
    const now = conversations.find((c) => c.id === open.id);
    if (now) showHeader(now);
  }
}

function renderList() {
  keepFocus(ui.list, () => ui.list.replaceChildren(...conversations.map(listItem)));
  ui.none.hidden = conversations.length > 0;
}

function listItem(c) {
  const li = el("li", "", "item");
  li.dataset.id = c.id;
  const name = peerName(c);
  li.dataset.peer = name;
  // the open one is read as it arrives (the server counts from its last history load)
  const isOpen = open !== null && open.id === c.id;
  const unread = !isOpen && Number.isInteger(c.unread) && c.unread > 0 ? ` (${c.unread} new)` : "";
  const b = el("button", `${name}${unread}`, c.peer && c.peer.deleted ? "btn subtle" : "btn");
  b.type = "button";
  b.setAttribute("aria-label", `Open the conversation with ${name}${unread}`);
  if (isOpen) b.setAttribute("aria-current", "true");
  b.addEventListener("click", () => openConversation(c.id, true));
  li.append(b);
  return li;
}

// ---- one conversation ------------------------------------------------------------------------

async function openConversation(id, focus) {
  if (!conversations.some((c) => c.id === id)) await refresh();
  const c = conversations.find((x) => x.id === id);
  if (!c) return;
  open = c;
  cursor = null;
  ui.log.replaceChildren();
  clearErrors(ui.form);
  showHeader(c);
  renderList(); // the open one is marked, its unread count gone
  ui.box.hidden = false;
  if (focus) (ui.input.disabled ? ui.title : ui.input).focus();
  await loadPage(true);
}

function showHeader(c) {
  open = c;
  ui.title.textContent = `With ${peerName(c)}`;
  ui.box.dataset.peer = peerName(c);
  ui.keep.checked = Boolean(c.keep_history);
  ui.saved.checked = Boolean(c.saved);
  const usable = Boolean(c.connected) && !(c.peer && c.peer.deleted);
  ui.input.disabled = !usable;
  ui.send.disabled = !usable;
  ui.call.disabled = !usable;
  ui.input.placeholder = usable ? "" : "You can no longer message them";
  ui.title.tabIndex = -1;
}

async function loadPage(fresh) {
  const c = open;
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (!fresh && cursor) params.set("before", cursor);
  const res = await app.call("GET", `/conversations/${encodeURIComponent(c.id)}/messages?${params}`);
  if (open !== c) return;
  if (!res.ok) {
    showError(ui.form, { ...res.error, field: null }, "Cannot load the history: ");
    return;
  }
  cursor = res.data.next_cursor;
  ui.older.hidden = !cursor;
  // newest first from the server: the log reads oldest to newest
  const lines = res.data.messages.slice().reverse().map(line);
  ui.log.prepend(...lines);
  if (fresh) ui.log.scrollTop = ui.log.scrollHeight;
}

function line(m) {
  const li = el("li", "", m.from === "me" ? "you" : m.from === "them" ? "stranger" : "system");
  const when = typeof m.at === "number" ? new Date(m.at * 1000) : new Date(m.at);
  li.title = Number.isNaN(when.getTime()) ? "" : when.toLocaleString();
  if (m.kind === "missed_call") {
    li.textContent = `Missed call from ${m.caller || peerName(open)}`;
  } else if (m.from === "me" || m.from === "them") {
    li.append(el("b", m.from === "me" ? "You: " : `${peerName(open)}: `),
      document.createTextNode(String(m.text || "")));
  } else {
    li.textContent = String(m.text || "");
  }
  return li;
}

function append(m) {
  ui.log.append(line(m));
  ui.log.scrollTop = ui.log.scrollHeight;
}

// ---- sending and receiving ------------------------------------------------------------------

function onSend(ev) {
  ev.preventDefault();
  clearErrors(ui.form);
  const text = ui.input.value.trim();
  if (!text || !open) return;
  if (!socket.send("direct", { conversation_id: open.id, text })) {
    showError(ui.form, { message: "not connected to the server yet: try again in a moment", field: null });
    return;
  }
  pending.push({ conversation_id: open.id, text });
  ui.input.value = "";
}

function onSent(msg) {
  const sent = pending.shift();
  if (!sent) return;
  if (open && open.id === sent.conversation_id) append({ from: "me", at: msg.at, text: sent.text });
}

function onDirect(msg) {
  if (typeof msg.text !== "string" || typeof msg.conversation_id !== "string") return;
  if (open && open.id === msg.conversation_id) {
    append({ from: msg.from === "me" ? "me" : "them", at: msg.at, text: msg.text });
  } else {
    app.say(`New message from ${nameOf(msg.conversation_id)}.`);
    refresh(); // its unread count
  }
}

function nameOf(id) {
  const c = conversations.find((x) => x.id === id);
  return c ? peerName(c) : "a connection";
}

function onError(msg) {
  if (msg.ref !== "direct") return;
  const sent = pending.shift();
  const why = typeof msg.message === "string" ? msg.message : msg.code;
  showError(ui.form, { message: `not sent${sent ? ` (“${sent.text}”)` : ""}: ${why}`, field: null });
  if (msg.code === "not_connected") refresh();
}

// ---- switches and delete ---------------------------------------------------------------------

async function setFlag(field, box) {
  if (!open) return;
  clearErrors(ui.form);
  box.disabled = true;
  const res = await app.call("PATCH", `/conversations/${encodeURIComponent(open.id)}`, {
    json: { [field]: box.checked },
  });
  box.disabled = false;
  if (!res.ok) {
    box.checked = !box.checked;
    showError(ui.form, { ...res.error, field: null }, "Not changed: ");
    return;
  }
  showHeader({ ...open, ...res.data });
  if (field === "keep_history" && !box.checked) ui.log.replaceChildren();
  app.say(field === "saved"
    ? (box.checked ? "This conversation is saved." : "This conversation is no longer saved.")
    : (box.checked ? "History is kept for this conversation." : "History is off: your copy is deleted."));
}

async function onDelete() {
  if (!open) return;
  clearErrors(ui.form);
  const res = await app.call("DELETE", `/conversations/${encodeURIComponent(open.id)}/messages`);
  if (!res.ok) {
    showError(ui.form, { ...res.error, field: null }, "Not deleted: ");
    return;
  }
  ui.log.replaceChildren();
  cursor = null;
  ui.older.hidden = true;
  app.say(`Your copy of the conversation with ${peerName(open)} is deleted.`);
  refresh();
}

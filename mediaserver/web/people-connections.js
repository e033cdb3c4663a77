// People mode: connections (GET /connections). Requests made to you (Accept, Decline),
// accepted connections (Message, Call, Remove) and the requests you made (Withdraw).
// The server pushes no signalling message when a request arrives or is answered, so
// people.js refreshes this list every 10 s while People mode shows (refresh()).
"use strict";

import { $, el, keepFocus } from "./api.js";

const ui = {
  incoming: $("connections-in"),
  incomingNone: $("connections-in-none"),
  accepted: $("connections-accepted"),
  acceptedNone: $("connections-accepted-none"),
  outgoing: $("connections-out"),
  outgoingNone: $("connections-out-none"),
  error: $("connections-error"),
};

let app = null;
let shownFor = null; // the session id the list belongs to

export function init(shared) {
  app = shared;
}

export function show(_, profile) {
  if (shownFor !== profile.id) {
    shownFor = profile.id;
    refresh();
  }
}

export function reset() {
  shownFor = null;
  for (const list of [ui.incoming, ui.accepted, ui.outgoing]) list.replaceChildren();
  for (const none of [ui.incomingNone, ui.acceptedNone, ui.outgoingNone]) none.hidden = false;
  ui.error.textContent = "";
}

/** Load the list again (after an action, on the poll, after a browse Connect). */
export async function refresh() {
  if (!app.session) return;
  const res = await app.call("GET", "/connections");
  if (!app.session) return;
  if (!res.ok) {
    ui.error.textContent = `Cannot list your connections: ${res.error.message}.`;
    return;
  }
  ui.error.textContent = "";
  const all = Array.isArray(res.data.connections) ? res.data.connections : [];
  const pending = (direction) => all.filter((c) => c.status === "pending" && c.direction === direction);
  fill(ui.incoming, ui.incomingNone, pending("in"), incomingItem);
  fill(ui.accepted, ui.acceptedNone, all.filter((c) => c.status === "accepted"), acceptedItem);
  fill(ui.outgoing, ui.outgoingNone, pending("out"), outgoingItem);
}

function fill(list, none, connections, item) {
  keepFocus(list, () => list.replaceChildren(...connections.map(item)));
  none.hidden = connections.length > 0;
}

// ---- items ---------------------------------------------------------------------------------

function who(c) {
  const handle = typeof c.handle === "string" ? c.handle : "";
  return typeof c.name === "string" && c.name ? `${c.name} (${handle})` : handle;
}

function item(c, ...buttons) {
  const li = el("li", "", "item");
  li.dataset.handle = typeof c.handle === "string" ? c.handle : "";
  li.dataset.id = c.id;
  const row = el("div", "", "row");
  row.append(...buttons);
  li.append(el("span", who(c), "item-title"), row);
  return li;
}

function button(text, label, onClick, className = "btn") {
  const b = el("button", text, className);
  b.type = "button";
  b.setAttribute("aria-label", label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await onClick();
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

function incomingItem(c) {
  const handle = c.handle;
  return item(
    c,
    button("Accept", `Accept ${handle}`, () => act("POST", `/connections/${encodeURIComponent(c.id)}/accept`,
      `You and ${handle} are connected.`), "btn primary"),
    button("Decline", `Decline ${handle}`, () => act("POST", `/connections/${encodeURIComponent(c.id)}/decline`,
      `You declined ${handle}.`), "btn danger"),
  );
}

function acceptedItem(c) {
  const handle = c.handle;
  return item(
    c,
    button("Message", `Message ${handle}`, async () => app.openConversation(c.conversation_id, true)),
    button("Call", `Call ${handle}`, async () => app.startCall(c.conversation_id, who(c))),
    button("Remove", `Remove ${handle}`, () => act("DELETE", `/connections/${encodeURIComponent(c.id)}`,
      `${handle} is no longer a connection.`), "btn danger"),
  );
}

function outgoingItem(c) {
  const handle = c.handle;
  return item(
    c,
    el("span", "Waiting for an answer", "hint"),
    button("Withdraw", `Withdraw the request to ${handle}`, () =>
      act("DELETE", `/connections/${encodeURIComponent(c.id)}`, `Your request to ${handle} is withdrawn.`), "btn subtle"),
  );
}

async function act(method, path, done) {
  ui.error.textContent = "";
  const res = await app.call(method, path);
  if (!res.ok) {
    ui.error.textContent = `Not done: ${res.error.message}.`;
    return;
  }
  app.say(done);
  await refresh();
  await app.refreshConversations();
}

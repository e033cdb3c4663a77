// People mode: browse discoverable people by interest (GET /profiles) and ask to
// connect (POST /connections {handle}). Cards are built from text nodes; a photo only
// from our own API's public photo URLs.
"use strict";

import { $, clearErrors, el, noSuchEndpoint, showError } from "./api.js";

const PHOTO_URL = /^\/api\/v1\/photos\/[A-Za-z0-9_-]+$/;

const ui = {
  form: $("browse-form"),
  interest: $("browse-interest"),
  language: $("browse-language"),
  summary: $("browse-summary"),
  cards: $("browse-cards"),
  more: $("browse-more"),
};

let app = null;
let query = null; // the filters of the listing shown, for More
let cursor = null;

export function init(shared) {
  app = shared;
  ui.form.addEventListener("submit", onSearch);
  ui.more.addEventListener("click", () => load(false));
}

export function show() {}

export function reset() {
  ui.form.reset();
  clearErrors(ui.form);
  ui.cards.replaceChildren();
  ui.summary.textContent = "";
  ui.more.hidden = true;
  query = null;
  cursor = null;
}

async function onSearch(ev) {
  ev.preventDefault();
  query = new URLSearchParams();
  const interest = ui.interest.value.trim();
  const language = ui.language.value.trim();
  if (interest) query.set("interest", interest);
  if (language) query.set("language", language);
  cursor = null;
  await load(true);
}

async function load(fresh) {
  clearErrors(ui.form);
  const params = new URLSearchParams(query);
  if (!fresh && cursor) params.set("cursor", cursor);
  const qs = params.toString();
  const res = await app.call("GET", `/profiles${qs ? `?${qs}` : ""}`);
  if (!res.ok) {
    showError(ui.form, res.error, "Cannot list people: ");
    return;
  }
  if (fresh) ui.cards.replaceChildren();
  for (const card of res.data.profiles) ui.cards.append(cardItem(card));
  cursor = res.data.next_cursor;
  ui.more.hidden = !cursor;
  const count = ui.cards.children.length;
  ui.summary.textContent = count
    ? `${count} ${count === 1 ? "person" : "people"} found.`
    : "Nobody found: try another interest.";
}

function cardItem(card) {
  const handle = typeof card.handle === "string" ? card.handle : "";
  const li = el("li", "", "person");
  li.dataset.handle = handle;
  const photo = typeof card.photo_url === "string" ? card.photo_url : "";
  if (PHOTO_URL.test(photo)) {
    const img = document.createElement("img");
    img.src = photo;
    img.alt = `Photo of ${handle}`;
    img.referrerPolicy = "no-referrer";
    img.className = "photo";
    li.append(img);
  } else {
    li.append(el("div", handle.charAt(0).toUpperCase(), "photo initial"));
  }
  const text = el("div", "", "person-text");
  const title = el("h3", handle);
  text.append(title);
  if (typeof card.age_band === "string") text.append(el("p", `Age ${card.age_band}`, "hint"));
  if (typeof card.bio === "string" && card.bio) text.append(el("p", card.bio, "bio"));
  const interests = Array.isArray(card.interests)
    ? card.interests.filter((i) => typeof i === "string")
    : [];
  if (interests.length) text.append(el("p", `Likes: ${interests.join(", ")}`, "likes"));
  const button = el("button", "Connect", "btn primary");
  button.type = "button";
  button.setAttribute("aria-label", `Connect with ${handle}`);
  const answer = el("p", "", "answer");
  answer.setAttribute("aria-live", "polite");
  button.addEventListener("click", () => connect(handle, button, answer));
  text.append(button, answer);
  li.append(text);
  return li;
}

async function connect(handle, button, answer) {
  button.disabled = true;
  answer.textContent = "";
  answer.classList.remove("error");
  const res = await app.call("POST", "/connections", { json: { handle } });
  if (res.ok) {
    const status = res.data && typeof res.data.status === "string" ? res.data.status : "";
    answer.textContent = status ? `Request sent (${status}).` : "Request sent.";
    app.refreshLists(); // it shows under Connections (accepted at once if they asked you)
    return;
  }
  button.disabled = false;
  answer.classList.add("error");
  answer.textContent = noSuchEndpoint(res)
    ? "Connecting is not available on this server yet."
    : `Not connected: ${res.error.message}.`;
}

// People mode: the moderation desk, shown only when the owner's profile says
// `moderator: true` (GET /profiles/{id}; the operator grants the role with
// `mediaserver moderation grant USERNAME`). The open queue (GET /moderation/reports),
// one report with its evidence (GET /moderation/reports/{id}: the chat lines; its
// still through GET .../frame), and the decision buttons with a note (POST
// .../decision). Every read of evidence is audited by the server.
"use strict";

import { $, clearErrors, dataUrl, el, keepFocus, showError } from "./api.js";

const REASON_LABELS = { underage: "Under 18" };
const ACTIONS = {
  dismiss: { action: "dismiss" },
  warn: { action: "warn" },
  "ban-86400": { action: "ban", duration_s: 86400 },
  "ban-604800": { action: "ban", duration_s: 604800 },
  "ban-forever": { action: "ban", duration_s: null },
};

const ui = {
  section: $("moderation-section"),
  refresh: $("moderation-refresh"),
  queue: $("moderation-queue"),
  none: $("moderation-none"),
  error: $("moderation-error"),
  detail: $("moderation-detail"),
  title: $("moderation-report-title"),
  meta: $("moderation-report-meta"),
  chat: $("moderation-chat"),
  chatNone: $("moderation-chat-none"),
  frame: $("moderation-frame"),
  frameNone: $("moderation-frame-none"),
  form: $("moderation-decision"),
  note: $("moderation-note"),
};

let app = null;
let isModerator = false;
let openId = null; // the report shown in the detail pane

export function init(shared) {
  app = shared;
  ui.refresh.addEventListener("click", () => refresh());
  ui.form.addEventListener("submit", onDecide);
}

export function show(_, profile) {
  // only GET /profiles/{id} carries the field: a PATCH answer leaves it as it was
  if (typeof profile.moderator === "boolean" && profile.moderator !== isModerator) {
    isModerator = profile.moderator;
    ui.section.hidden = !isModerator;
    if (isModerator) refresh();
  }
}

export function reset() {
  isModerator = false;
  openId = null;
  ui.section.hidden = true;
  ui.queue.replaceChildren();
  ui.none.hidden = false;
  ui.error.textContent = "";
  closeDetail();
}

/** The open queue again (on the 10 s poll and the Refresh button). */
export async function refresh() {
  if (!app.session || !isModerator) return;
  const res = await app.call("GET", "/moderation/reports?status=open");
  if (!app.session || !isModerator) return;
  if (!res.ok) {
    ui.error.textContent = `Cannot load the queue: ${res.error.message}.`;
    return;
  }
  ui.error.textContent = "";
  keepFocus(ui.queue, () => ui.queue.replaceChildren(...res.data.reports.map(item)));
  ui.none.hidden = res.data.reports.length > 0;
}

function reasonLabel(reason) {
  return REASON_LABELS[reason] || reason.charAt(0).toUpperCase() + reason.slice(1);
}

function when(iso) {
  return String(iso).slice(0, 16).replace("T", " ") + " UTC";
}

function item(report) {
  const li = el("li", "", "item");
  li.dataset.id = report.id;
  const who = report.reported_handle ? `@${report.reported_handle}` : "a visitor (signed out)";
  const title = `${reasonLabel(report.reason)}: ${who}`;
  li.append(
    el("span", title, "item-title"),
    el("span", `${report.source} report, ${when(report.at)}`, "hint"),
  );
  const open = el("button", "Open", "btn");
  open.type = "button";
  open.setAttribute("aria-label", `Open the report: ${title}, ${when(report.at)}`);
  open.addEventListener("click", () => openReport(report.id));
  li.append(open);
  return li;
}

async function openReport(id) {
  const res = await app.call("GET", `/moderation/reports/${encodeURIComponent(id)}`);
  if (!res.ok) {
    ui.error.textContent = `Cannot open the report: ${res.error.message}.`;
    return;
  }
  const report = res.data;
  openId = report.id;
  clearErrors(ui.form);
  ui.note.value = "";
  const who = report.reported_handle ? `@${report.reported_handle}` : "a visitor (signed out)";
  ui.title.textContent = `${reasonLabel(report.reason)}: ${who}`;
  ui.meta.textContent = `Reported ${when(report.at)} (${report.source}). Report ${report.id}.`;
  const evidence = report.evidence || {};
  const lines = Array.isArray(evidence.chat) ? evidence.chat : [];
  ui.chat.replaceChildren(
    ...lines.map((line) => {
      const li = el("li", "", `chat-line from-${line.from === "reported" ? "reported" : "reporter"}`);
      li.append(el("b", line.from === "reported" ? "Reported: " : "Reporter: "),
        document.createTextNode(String(line.text)));
      return li;
    }),
  );
  ui.chatNone.hidden = lines.length > 0;
  await showFrame(report, evidence);
  ui.detail.hidden = false;
  ui.title.focus();
}

async function showFrame(report, evidence) {
  ui.frame.hidden = true;
  ui.frame.removeAttribute("src");
  ui.frameNone.textContent = evidence.frame_missing
    ? `No still: ${evidence.frame_missing}.`
    : "No still was sent.";
  ui.frameNone.hidden = false;
  if (!evidence.frame || typeof evidence.frame.url !== "string") return;
  // the still needs the token, which an <img> cannot send: fetch it (the read is audited)
  const res = await app.call("GET", evidence.frame.url.replace(/^\/api\/v1/, ""));
  if (!res.ok || !(res.data instanceof Blob) || openId !== report.id) {
    if (!res.ok) ui.frameNone.textContent = `Cannot load the still: ${res.error.message}.`;
    return;
  }
  ui.frame.src = await dataUrl(res.data);
  ui.frame.hidden = false;
  ui.frameNone.hidden = true;
}

function closeDetail() {
  openId = null;
  ui.detail.hidden = true;
  ui.chat.replaceChildren();
  ui.frame.hidden = true;
  ui.frame.removeAttribute("src");
  ui.note.value = "";
}

async function onDecide(ev) {
  ev.preventDefault();
  const choice = ACTIONS[ev.submitter ? ev.submitter.value : ""];
  if (!choice || !openId) return;
  const id = openId;
  const buttons = ui.form.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  try {
    const body = { ...choice, note: ui.note.value.trim() };
    if (body.action !== "ban") delete body.duration_s;
    const res = await app.call("POST", `/moderation/reports/${encodeURIComponent(id)}/decision`, {
      json: body,
    });
    if (!res.ok) {
      showError(ui.form, res.error, "Not decided: ");
      return;
    }
    closeDetail();
    app.say(`Decided: ${ev.submitter.textContent}.`);
    await refresh();
    ui.refresh.focus();
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

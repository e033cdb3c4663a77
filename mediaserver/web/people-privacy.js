// People mode: the privacy centre. Download my data (an access request, saved as a
// file), correct details (PATCH), consents and opt-outs, the requests made with their
// status and due date, and deleting the account after confirming the password (and
// the two-factor code) again.
"use strict";

import { $, api, clearErrors, day, el, showError } from "./api.js";

const EXPORT_WAIT_MS = 60000; // an access request completes in the background: poll this long
const POLL_MS = 500;
const REQUEST_NAMES = {
  access: "Copy of my data",
  correction: "Correction",
  deletion: "Deletion",
  opt_out: "Opt-out of sale and sharing",
  withdraw_consent: "Consent withdrawal",
};

const ui = {
  download: $("download-data"),
  downloadError: $("download-error"),
  correctForm: $("correct-form"),
  correctUsername: $("correct-username"),
  correctDob: $("correct-dob"),
  consentForm: $("consent-form"),
  consentChat: $("consent-chat"),
  consentDiscoverable: $("consent-discoverable"),
  optOut: $("opt-out"),
  optOutUndo: $("opt-out-undo"),
  optOutState: $("optout-state"),
  requestsBody: $("requests-body"),
  requestsNone: $("requests-none"),
  deleteForm: $("delete-form"),
  deleteOtpBox: $("delete-otp-box"),
};

let app = null;

export function init(shared) {
  app = shared;
  ui.download.addEventListener("click", onDownload);
  ui.correctForm.addEventListener("submit", onCorrect);
  ui.consentChat.addEventListener("change", () =>
    setConsent("chat_history_consent", ui.consentChat));
  ui.consentDiscoverable.addEventListener("change", () =>
    setConsent("discoverable", ui.consentDiscoverable));
  ui.consentForm.addEventListener("submit", (ev) => ev.preventDefault());
  ui.optOut.addEventListener("click", onOptOut);
  ui.optOutUndo.addEventListener("click", onUndoOptOut);
  ui.deleteForm.addEventListener("submit", onDelete);
}

export function show(_, profile) {
  ui.correctUsername.value = profile.username;
  ui.correctDob.value = profile.date_of_birth;
  ui.consentChat.checked = Boolean(profile.chat_history_consent);
  ui.consentDiscoverable.checked = Boolean(profile.discoverable);
  const focused = document.activeElement;
  ui.optOut.hidden = Boolean(profile.opted_out);
  ui.optOutUndo.hidden = !profile.opted_out;
  // the button pressed is swapped for the other one: the focus follows it
  if (focused === ui.optOut && ui.optOut.hidden) ui.optOutUndo.focus();
  if (focused === ui.optOutUndo && ui.optOutUndo.hidden) ui.optOut.focus();
  ui.optOutState.textContent = profile.opted_out
    ? "You opted out of sale and sharing. You can undo it."
    : "You have not opted out of sale and sharing.";
  ui.deleteOtpBox.hidden = !profile.two_factor;
  $("delete-otp").required = Boolean(profile.two_factor);
  listRequests();
}

export function reset() {
  for (const form of [ui.correctForm, ui.consentForm, ui.deleteForm]) {
    form.reset();
    clearErrors(form);
  }
  ui.downloadError.textContent = "";
  ui.requestsBody.replaceChildren();
  ui.requestsNone.hidden = false;
}

// ---- requests ---------------------------------------------------------------------------

async function submit(type) {
  return app.call("POST", "/privacy-requests", { json: { type } });
}

async function listRequests() {
  const res = await app.call("GET", "/privacy-requests");
  if (!res.ok || !app.session) return;
  const rows = res.data.requests.map((r) => {
    const tr = document.createElement("tr");
    tr.append(
      el("td", REQUEST_NAMES[r.type] || r.type),
      el("td", r.status + (r.reason ? ` (${r.reason})` : "")),
      el("td", day(r.received_at)),
      el("td", day(r.due_at)),
    );
    return tr;
  });
  ui.requestsBody.replaceChildren(...rows);
  ui.requestsNone.hidden = rows.length > 0;
}

/** Poll a request until it is completed or rejected (or the wait runs out). */
async function settled(id) {
  const deadline = Date.now() + EXPORT_WAIT_MS;
  while (Date.now() < deadline) {
    const res = await app.call("GET", `/privacy-requests/${encodeURIComponent(id)}`);
    if (!res.ok) return res;
    if (res.data.status === "completed" || res.data.status === "rejected") return res;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  return null;
}

async function onDownload() {
  ui.downloadError.textContent = "";
  ui.download.disabled = true;
  app.say("Preparing your data…");
  try {
    const asked = await submit("access");
    if (!asked.ok) {
      ui.downloadError.textContent = `Cannot ask for your data: ${asked.error.message}.`;
      return;
    }
    await listRequests();
    const done = await settled(asked.data.id);
    if (done === null) {
      ui.downloadError.textContent =
        "Your request is still being prepared: it is listed below; try again later.";
      return;
    }
    if (!done.ok || !done.data.export) {
      const why = done.ok ? done.data.reason || done.data.status : done.error.message;
      ui.downloadError.textContent = `No data file: ${why}.`;
      return;
    }
    const name = `mediaserver-data-${app.session.username}-${day(done.data.completed_at)}.json`;
    saveFile(done.data.export, name);
    app.say("Your data is downloaded.");
  } finally {
    ui.download.disabled = false;
    listRequests();
  }
}

function saveFile(data, name) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- corrections and consents --------------------------------------------------------------

async function onCorrect(ev) {
  ev.preventDefault();
  clearErrors(ui.correctForm);
  const data = new FormData(ui.correctForm);
  const body = {};
  const username = String(data.get("username")).trim();
  const dob = String(data.get("date_of_birth"));
  if (username && username !== app.profile.username) body.username = username;
  if (dob && dob !== app.profile.date_of_birth) body.date_of_birth = dob;
  if (!Object.keys(body).length) {
    showError(ui.correctForm, { message: "nothing to correct", field: null });
    return;
  }
  if (data.get("current_password")) body.current_password = String(data.get("current_password"));
  const res = await app.call("PATCH", `/profiles/${encodeURIComponent(app.session.id)}`, {
    json: body,
  });
  if (!res.ok) {
    showError(ui.correctForm, res.error, "Not corrected: ");
    return;
  }
  $("correct-pass").value = "";
  app.setProfile(res.data);
  app.say("Your details are corrected.");
}

async function setConsent(field, box) {
  clearErrors(ui.consentForm);
  box.disabled = true;
  const res = await app.call("PATCH", `/profiles/${encodeURIComponent(app.session.id)}`, {
    json: { [field]: box.checked },
  });
  box.disabled = false;
  if (!res.ok) {
    box.checked = !box.checked;
    showError(ui.consentForm, { ...res.error, field: null }, "Not changed: ");
    return;
  }
  app.setProfile(res.data);
  app.say("Your choice is saved.");
}

async function onOptOut() {
  clearErrors(ui.consentForm);
  const res = await submit("opt_out");
  if (!res.ok) {
    showError(ui.consentForm, { ...res.error, field: null }, "Not recorded: ");
    return;
  }
  const done = await settled(res.data.id);
  const again = await app.call("GET", `/profiles/${encodeURIComponent(app.session.id)}`);
  if (again.ok) app.setProfile(again.data);
  if (done && done.ok) app.say("Your opt-out is recorded.");
}

async function onUndoOptOut() {
  clearErrors(ui.consentForm);
  ui.optOutUndo.disabled = true;
  const res = await app.call("DELETE", `/profiles/${encodeURIComponent(app.session.id)}/opt-out`);
  ui.optOutUndo.disabled = false;
  if (!res.ok) {
    showError(ui.consentForm, { ...res.error, field: null }, "Not undone: ");
    return;
  }
  const again = await app.call("GET", `/profiles/${encodeURIComponent(app.session.id)}`);
  if (again.ok) app.setProfile(again.data);
  app.say("Your opt-out is undone.");
}

// ---- delete -----------------------------------------------------------------------------

async function onDelete(ev) {
  ev.preventDefault();
  clearErrors(ui.deleteForm);
  const data = new FormData(ui.deleteForm);
  const body = { username: app.profile.username, password: String(data.get("password")) };
  const otp = String(data.get("otp") || "").trim();
  if (otp) body.otp = otp;
  // a fresh sign-in proves it is the owner at the keyboard: its token deletes
  const signin = await api("POST", "/sessions", { json: body });
  if (!signin.ok) {
    if (signin.error.code === "otp_required") {
      ui.deleteOtpBox.hidden = false;
      showError(ui.deleteForm, {
        message: "enter your two-factor or a recovery code", field: "otp",
      });
      return;
    }
    const { code } = signin.error;
    const field = { invalid_otp: "otp", invalid_credentials: "password" }[code] || null;
    const message = code === "invalid_credentials" ? "wrong password" : signin.error.message;
    showError(ui.deleteForm, { ...signin.error, message, field }, "Not deleted: ");
    return;
  }
  const res = await api("DELETE", `/profiles/${encodeURIComponent(signin.data.id)}`, {
    token: signin.data.token,
  });
  if (!res.ok) {
    showError(ui.deleteForm, { ...res.error, field: null }, "Not deleted: ");
    return;
  }
  app.signedOut("Your account is deleted.");
}

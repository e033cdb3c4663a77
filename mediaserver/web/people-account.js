// People mode: the account's mail-backed parts. Verifying the e-mail address with the
// mailed code (and asking for a new one), accepting a policy version published since
// the owner last accepted one, and the signed-in sessions (device, last seen, Revoke).
"use strict";

import { $, clearErrors, day, el, keepFocus, showError } from "./api.js";

const ui = {
  verifySection: $("verify-section"),
  verifyForm: $("verify-form"),
  verifyHint: $("verify-hint"),
  verifyCode: $("verify-code"),
  verifyResend: $("verify-resend"),
  policySection: $("policy-section"),
  policyText: $("policy-text"),
  policyError: $("policy-error"),
  policyAccept: $("policy-accept"),
  sessions: $("sessions-list"),
  sessionsError: $("sessions-error"),
};

let app = null;
let shownFor = null;

const own = (path = "") => `/profiles/${encodeURIComponent(app.session.id)}${path}`;

export function init(shared) {
  app = shared;
  ui.verifyForm.addEventListener("submit", onVerify);
  ui.verifyResend.addEventListener("click", onResend);
  ui.policyAccept.addEventListener("click", onAcceptPolicy);
}

export function show(_, profile) {
  const unverified = Boolean(profile.email) && !profile.email_verified;
  const wasHidden = ui.verifySection.hidden;
  ui.verifySection.hidden = !unverified;
  if (unverified) {
    ui.verifyHint.textContent =
      `We mailed a 6-digit code to ${profile.email}. Type it here to verify the address.`;
    if (wasHidden) ui.verifyCode.focus();
  }
  const current = profile.policy_current;
  ui.policySection.hidden = !current || profile.policy_accepted === current;
  if (!ui.policySection.hidden) showPolicy(current);
  if (shownFor !== profile.id) {
    shownFor = profile.id;
    listSessions();
  }
}

export function reset() {
  shownFor = null;
  ui.verifySection.hidden = true;
  ui.policySection.hidden = true;
  ui.verifyForm.reset();
  clearErrors(ui.verifyForm);
  ui.policyError.textContent = "";
  ui.sessions.replaceChildren();
  ui.sessionsError.textContent = "";
}

export function refresh() {
  return listSessions();
}

// ---- e-mail verification ----------------------------------------------------------------------

async function onVerify(ev) {
  ev.preventDefault();
  clearErrors(ui.verifyForm);
  const code = ui.verifyCode.value.trim();
  const res = await app.call("POST", own("/email/verify"), { json: { code } });
  if (!res.ok) {
    showError(ui.verifyForm, res.error, "Not verified: ");
    return;
  }
  ui.verifyForm.reset();
  const again = await app.call("GET", own());
  if (again.ok) app.setProfile(again.data);
  app.say("Your e-mail address is verified.");
}

async function onResend() {
  clearErrors(ui.verifyForm);
  ui.verifyResend.disabled = true;
  const res = await app.call("POST", own("/email/code"));
  ui.verifyResend.disabled = false;
  if (!res.ok) {
    showError(ui.verifyForm, { ...res.error, field: null }, "No new code: ");
    return;
  }
  app.say("A new code is on its way: the earlier one no longer works.");
  ui.verifyCode.focus();
}

// ---- the policy ---------------------------------------------------------------------------------

/** The policy as GET /policy answers it ({version, effective_date, url}), or null. */
export async function currentPolicy() {
  const res = await app.call("GET", "/policy");
  return res.ok && res.data && typeof res.data.version === "string" ? res.data : null;
}

/** "version 3 (in effect from 2026-01-01)" and a link to read it, into `node`. */
export function describePolicy(node, policy, before, after) {
  node.replaceChildren(before);
  const text = `version ${policy.version}` +
    (policy.effective_date ? `, in effect from ${day(policy.effective_date)}` : "");
  if (typeof policy.url === "string" && /^(https?:\/\/|\/)/i.test(policy.url)) {
    const link = el("a", `the policy (${text})`);
    link.href = policy.url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    node.append(link);
  } else {
    node.append(`the policy (${text})`);
  }
  node.append(after);
}

async function showPolicy(version) {
  const policy = await currentPolicy();
  describePolicy(ui.policyText, policy || { version }, "Please read ",
    " and accept it to go on using your account.");
  ui.policyAccept.dataset.version = version;
}

async function onAcceptPolicy() {
  ui.policyError.textContent = "";
  const version = ui.policyAccept.dataset.version;
  const res = await app.call("POST", own("/policy"), { json: { version } });
  if (!res.ok) {
    ui.policyError.textContent = `Not accepted: ${res.error.message}.`;
    return;
  }
  const again = await app.call("GET", own());
  if (again.ok) app.setProfile(again.data);
  app.say("Thank you: the policy is accepted.");
}

// ---- sessions -----------------------------------------------------------------------------------

async function listSessions() {
  if (!app.session) return;
  const res = await app.call("GET", own("/sessions"));
  if (!app.session) return;
  if (!res.ok) {
    ui.sessionsError.textContent = `Cannot list your sessions: ${res.error.message}.`;
    return;
  }
  ui.sessionsError.textContent = "";
  keepFocus(ui.sessions, () => ui.sessions.replaceChildren(...res.data.sessions.map(sessionItem)));
}

function sessionItem(s) {
  const li = el("li", "", "item");
  li.dataset.id = s.id;
  const device = s.device || "Unknown device";
  const title = el("span", device, "item-title");
  if (s.current) {
    li.classList.add("current");
    title.append(el("b", " — this session"));
  }
  const seen = s.last_seen_at ? `last seen ${day(s.last_seen_at)}` : "not seen since";
  li.append(title, el("span", `Signed in ${day(s.created_at)}, ${seen}.`, "hint"));
  if (!s.current) {
    const b = el("button", "Revoke", "btn danger");
    b.type = "button";
    b.setAttribute("aria-label", `Revoke ${device}, signed in ${day(s.created_at)}`);
    b.addEventListener("click", () => revoke(s, b));
    li.append(b);
  }
  return li;
}

async function revoke(s, button) {
  button.disabled = true;
  const res = await app.call("DELETE", own(`/sessions/${encodeURIComponent(s.id)}`));
  if (!res.ok) {
    button.disabled = false;
    ui.sessionsError.textContent = `Not revoked: ${res.error.message}.`;
    return;
  }
  app.say(`The session on ${s.device || "an unknown device"} is signed out.`);
  listSessions();
}

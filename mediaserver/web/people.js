// People mode: the social app on the REST API (the README's REST section). This
// module switches between the two modes (remembered in the URL hash), signs up, in
// and out, opens People mode's own signalling socket (people-socket.js: messages and
// calls), and hands the signed-in profile to the sections (people-*.js). Random mode
// (app.js) is untouched by it: its own optional sign-in stays in memory only.
"use strict";

import {
  $, api, clearErrors, day, loadSession, parseList, saveSession, showError,
} from "./api.js";
import * as accountSection from "./people-account.js";
import * as callSection from "./people-call.js";
import * as chatSection from "./people-chat.js";
import * as connectionsSection from "./people-connections.js";
import * as inboxSection from "./people-inbox.js";
import * as moderationSection from "./people-moderation.js";
import * as profileSection from "./people-profile.js";
import * as browseSection from "./people-browse.js";
import * as privacySection from "./people-privacy.js";
import * as socket from "./people-socket.js";

const SECTIONS = [
  accountSection, callSection, connectionsSection, chatSection, inboxSection,
  profileSection, browseSection, privacySection, moderationSection,
];
const MODES = ["random", "people"];
// Nothing is pushed over signalling when a connection request arrives or is answered,
// a notice lands or a peer deletes the account: the lists are polled this often while
// People mode shows (direct messages and calls do arrive live, on the socket).
const POLL_MS = 10000;

const ui = {
  random: $("random-mode"),
  people: $("people-mode"),
  status: $("people-status"),
  signedOut: $("people-signed-out"),
  signedIn: $("people-signed-in"),
  whoami: $("people-whoami"),
  signout: $("people-signout"),
  signupForm: $("signup-form"),
  signinForm: $("people-signin-form"),
  signinUser: $("people-signin-user"),
  signinPass: $("people-signin-pass"),
  otpStep: $("people-otp-step"),
  signinOtp: $("people-signin-otp"),
  signupPolicy: $("signup-policy"),
};

/** What the sections share: the session, the owner's profile, calls with the token. */
const app = {
  session: null, // {token, id, username}
  profile: null, // the owner's profile as GET /profiles/{id} answers it

  /** An API call with this tab's token; a token the server no longer knows signs
   * the page out (the account was deleted, the session expired or was revoked). */
  async call(method, path, opts = {}) {
    const token = app.session ? app.session.token : null;
    const res = await api(method, path, { ...opts, token });
    if (res.status === 401 && token && app.session && app.session.token === token) {
      signedOut("Your session ended: please sign in again.");
    }
    return res;
  },

  /** The owner's profile changed: every section shows the new one. */
  setProfile(profile) {
    app.profile = profile;
    app.session.username = profile.username;
    saveSession(app.session);
    ui.whoami.textContent = profile.username;
    for (const section of SECTIONS) section.show(app, profile);
  },

  /** Every list the server does not push (connections, conversations, inbox, sessions). */
  async refreshLists() {
    for (const section of SECTIONS) {
      if (app.session && typeof section.refresh === "function") await section.refresh(app);
    }
  },

  say(text) {
    ui.status.textContent = text;
  },

  signedOut,
};

// ---- modes ------------------------------------------------------------------------------

function currentMode() {
  const mode = location.hash.replace(/^#/, "");
  return MODES.includes(mode) ? mode : "random";
}

function showMode() {
  const mode = currentMode();
  ui.random.hidden = mode !== "random";
  ui.people.hidden = mode !== "people";
  document.body.dataset.mode = mode;
  for (const name of MODES) {
    const link = $(`mode-${name}`);
    if (name === mode) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title =
    mode === "people" ? "mediaserver — people" : "mediaserver — talk to a stranger";
}

// ---- signed in / out -------------------------------------------------------------------

async function signedIn(session, message) {
  app.session = session;
  saveSession(session);
  const res = await app.call("GET", `/profiles/${encodeURIComponent(session.id)}`);
  if (!res.ok) {
    if (app.session) signedOut(`Cannot load your profile: ${res.error.message}.`);
    return;
  }
  ui.signedOut.hidden = true;
  ui.signedIn.hidden = false;
  socket.connect(session.token);
  app.setProfile(res.data);
  app.say(message);
  ui.signout.focus();
}

function signedOut(message) {
  app.session = null;
  app.profile = null;
  saveSession(null);
  socket.disconnect();
  for (const section of SECTIONS) section.reset(app);
  ui.signedIn.hidden = true;
  ui.signedOut.hidden = false;
  ui.otpStep.hidden = true;
  ui.signinOtp.value = "";
  app.say(message);
}

async function onSignUp(ev) {
  ev.preventDefault();
  const form = ui.signupForm;
  clearErrors(form);
  const data = new FormData(form);
  const body = {
    username: String(data.get("username")).trim(),
    password: String(data.get("password")),
    date_of_birth: String(data.get("date_of_birth")),
    interests: parseList(String(data.get("interests"))),
    bio: String(data.get("bio")),
    discoverable: data.get("discoverable") === "on",
  };
  for (const field of ["name", "email"]) {
    const value = String(data.get(field) || "").trim();
    if (value) body[field] = value;
  }
  // pressing Sign up accepts the policy version shown above the button
  if (ui.signupPolicy.dataset.version) body.policy_version = ui.signupPolicy.dataset.version;
  const button = $("signup-submit");
  button.disabled = true;
  try {
    const res = await api("POST", "/profiles", { json: body });
    if (!res.ok) {
      showError(form, res.error, "Cannot sign up: ");
      return;
    }
    form.reset();
    await signedIn(
      { token: res.data.token, id: res.data.id, username: res.data.username },
      res.data.email
        ? `Welcome, ${res.data.username}: your account is made. Check your mail for the code.`
        : `Welcome, ${res.data.username}: your account is made.`,
    );
  } finally {
    button.disabled = false;
  }
}

async function onSignIn(ev) {
  ev.preventDefault();
  const form = ui.signinForm;
  clearErrors(form);
  const body = { username: ui.signinUser.value.trim(), password: ui.signinPass.value };
  const otp = ui.signinOtp.value.trim();
  if (!ui.otpStep.hidden && otp) body.otp = otp;
  const button = $("people-signin");
  button.disabled = true;
  try {
    const res = await api("POST", "/sessions", { json: body });
    if (!res.ok) {
      if (res.error.code === "otp_required") {
        // the password was right: the second step asks for the code
        ui.otpStep.hidden = false;
        form.querySelector('.error[data-error-for="otp"]').textContent =
          "Two-factor is on: enter the code from your app.";
        ui.signinOtp.focus();
        return;
      }
      const field = res.error.code === "invalid_otp" ? "otp" : null;
      showError(form, { ...res.error, field }, "Cannot sign in: ");
      if (field) ui.signinOtp.select();
      return;
    }
    form.reset();
    await signedIn(
      { token: res.data.token, id: res.data.id, username: body.username },
      `Signed in as ${body.username}. Session until ${day(res.data.expires_at)}.`,
    );
  } finally {
    button.disabled = false;
  }
}

async function onSignOut() {
  const token = app.session ? app.session.token : null;
  signedOut("Signed out.");
  if (token) await api("DELETE", "/sessions/current", { token }); // revoked on the server
}

async function showSignUpPolicy() {
  const policy = await accountSection.currentPolicy();
  if (!policy) {
    ui.signupPolicy.textContent = "No policy is published on this server yet.";
    delete ui.signupPolicy.dataset.version;
    return;
  }
  ui.signupPolicy.dataset.version = policy.version;
  accountSection.describePolicy(ui.signupPolicy, policy, "By pressing Sign up you accept ", ".");
}

function poll() {
  if (app.session && currentMode() === "people" && document.visibilityState === "visible") {
    app.refreshLists();
  }
}

// ---- start ------------------------------------------------------------------------------

window.addEventListener("hashchange", showMode);
ui.signupForm.addEventListener("submit", onSignUp);
ui.signinForm.addEventListener("submit", onSignIn);
ui.signout.addEventListener("click", onSignOut);
for (const section of SECTIONS) section.init(app);
socket.on("refused", (msg) => {
  // hello refused the token: the session ended on the server
  if (app.session && app.session.token === msg.token) signedOut("Your session ended: please sign in again.");
});
setInterval(poll, POLL_MS);
showSignUpPolicy();
showMode();
const stored = loadSession(); // before signedOut(), which clears it
signedOut("");
if (stored) signedIn(stored, `Signed in as ${stored.username}.`);

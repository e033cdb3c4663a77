// People mode: your profile (bio, interests, discoverable), your photo (a preview
// before the upload) and security (two-factor set-up and removal, the password).
"use strict";

import { $, clearErrors, dataUrl, el, parseList, showError } from "./api.js";

const ui = {
  profileForm: $("profile-form"),
  bio: $("profile-bio"),
  interests: $("profile-interests"),
  discoverable: $("profile-discoverable"),
  photoForm: $("photo-form"),
  photoFile: $("photo-file"),
  photoPreviewBox: $("photo-preview-box"),
  photoPreview: $("photo-preview"),
  photoCurrent: $("photo-current"),
  photoNone: $("photo-none"),
  photoUpload: $("photo-upload"),
  photoRemove: $("photo-remove"),
  twofaState: $("twofa-state"),
  twofaStart: $("twofa-start-form"),
  twofaConfirm: $("twofa-confirm-form"),
  twofaQr: $("twofa-qr"),
  twofaSecret: $("twofa-secret"),
  recoveryBox: $("recovery-box"),
  recoveryCodes: $("recovery-codes"),
  twofaDisable: $("twofa-disable-form"),
  passwordForm: $("password-form"),
};

let app = null;
let shownPhotoUrl = null; // the photo_url last loaded into #photo-current

const own = (path = "") => `/profiles/${encodeURIComponent(app.session.id)}${path}`;

export function init(shared) {
  app = shared;
  ui.profileForm.addEventListener("submit", onSaveProfile);
  ui.photoFile.addEventListener("change", onChoosePhoto);
  ui.photoForm.addEventListener("submit", onUploadPhoto);
  ui.photoRemove.addEventListener("click", onRemovePhoto);
  ui.twofaStart.addEventListener("submit", onStartTwoFactor);
  ui.twofaConfirm.addEventListener("submit", onConfirmTwoFactor);
  ui.twofaDisable.addEventListener("submit", onDisableTwoFactor);
  ui.passwordForm.addEventListener("submit", onChangePassword);
}

export function show(_, profile) {
  ui.bio.value = profile.bio || "";
  ui.interests.value = (profile.interests || []).join(", ");
  ui.discoverable.checked = Boolean(profile.discoverable);
  ui.photoRemove.disabled = !profile.photo_url;
  if (profile.photo_url !== shownPhotoUrl) loadPhoto(profile.photo_url);
  ui.twofaState.textContent = profile.two_factor
    ? "Two-factor is on: signing in asks for a code."
    : "Two-factor is off.";
  ui.twofaStart.hidden = Boolean(profile.two_factor) || !ui.twofaConfirm.hidden;
  ui.twofaDisable.hidden = !profile.two_factor;
}

export function reset() {
  for (const form of [ui.profileForm, ui.photoForm, ui.twofaStart, ui.twofaConfirm,
    ui.twofaDisable, ui.passwordForm]) {
    form.reset();
    clearErrors(form);
  }
  clearPreview();
  shownPhotoUrl = null;
  ui.photoCurrent.hidden = true;
  ui.photoCurrent.removeAttribute("src");
  ui.photoNone.hidden = false;
  ui.twofaConfirm.hidden = true;
  ui.twofaQr.removeAttribute("src");
  ui.twofaSecret.textContent = "";
  ui.recoveryBox.hidden = true;
  ui.recoveryCodes.replaceChildren();
}

// ---- profile ----------------------------------------------------------------------------

async function onSaveProfile(ev) {
  ev.preventDefault();
  clearErrors(ui.profileForm);
  const res = await app.call("PATCH", own(), {
    json: {
      bio: ui.bio.value,
      interests: parseList(ui.interests.value),
      discoverable: ui.discoverable.checked,
    },
  });
  if (!res.ok) {
    showError(ui.profileForm, res.error, "Not saved: ");
    return;
  }
  app.setProfile(res.data);
  app.say("Profile saved.");
}

// ---- photo ------------------------------------------------------------------------------

function clearPreview() {
  ui.photoPreviewBox.hidden = true;
  ui.photoPreview.removeAttribute("src");
  ui.photoUpload.disabled = true;
}

async function onChoosePhoto() {
  clearErrors(ui.photoForm);
  const file = ui.photoFile.files && ui.photoFile.files[0];
  if (!file) {
    clearPreview();
    return;
  }
  // shown from the file itself, before anything is sent (a data: URL: the CSP allows it)
  ui.photoPreview.src = await dataUrl(file);
  ui.photoPreviewBox.hidden = false;
  ui.photoUpload.disabled = false;
}

async function onUploadPhoto(ev) {
  ev.preventDefault();
  const file = ui.photoFile.files && ui.photoFile.files[0];
  if (!file) return;
  clearErrors(ui.photoForm);
  ui.photoUpload.disabled = true;
  const res = await app.call("PUT", own("/photo"), { body: file, type: file.type });
  if (!res.ok) {
    ui.photoUpload.disabled = false;
    showError(ui.photoForm, res.error, "Not uploaded: ");
    return;
  }
  ui.photoForm.reset();
  clearPreview();
  shownPhotoUrl = null; // same URL, new picture: load it again
  await refresh();
  app.say("Photo uploaded.");
}

async function onRemovePhoto() {
  clearErrors(ui.photoForm);
  const res = await app.call("DELETE", own("/photo"));
  if (!res.ok) {
    showError(ui.photoForm, res.error, "Not removed: ");
    return;
  }
  await refresh();
  app.say("Photo removed.");
}

async function loadPhoto(url) {
  shownPhotoUrl = url;
  if (!url) {
    ui.photoCurrent.hidden = true;
    ui.photoCurrent.removeAttribute("src");
    ui.photoNone.hidden = false;
    return;
  }
  // the owner's photo needs the token, which an <img> cannot send: fetch it
  const res = await app.call("GET", url.replace(/^\/api\/v1/, ""));
  if (!res.ok || !(res.data instanceof Blob) || shownPhotoUrl !== url) return;
  ui.photoCurrent.src = await dataUrl(res.data);
  ui.photoCurrent.hidden = false;
  ui.photoNone.hidden = true;
}

async function refresh() {
  const res = await app.call("GET", own());
  if (res.ok) app.setProfile(res.data);
}

// ---- two-factor and password --------------------------------------------------------------

async function onStartTwoFactor(ev) {
  ev.preventDefault();
  clearErrors(ui.twofaStart);
  const password = new FormData(ui.twofaStart).get("current_password");
  const res = await app.call("POST", own("/totp"), {
    json: password ? { current_password: String(password) } : {},
  });
  if (!res.ok) {
    showError(ui.twofaStart, res.error, "Cannot set up two-factor: ");
    return;
  }
  ui.twofaStart.reset();
  ui.twofaQr.src = `data:image/png;base64,${res.data.qr_png_base64}`;
  ui.twofaSecret.textContent = res.data.secret;
  ui.twofaStart.hidden = true;
  ui.twofaConfirm.hidden = false;
  $("twofa-code").focus();
}

async function onConfirmTwoFactor(ev) {
  ev.preventDefault();
  clearErrors(ui.twofaConfirm);
  const code = String(new FormData(ui.twofaConfirm).get("code")).trim();
  const res = await app.call("POST", own("/totp/confirm"), { json: { code } });
  if (!res.ok) {
    showError(ui.twofaConfirm, res.error, "Not turned on: ");
    return;
  }
  ui.twofaConfirm.reset();
  ui.twofaConfirm.hidden = true;
  ui.twofaQr.removeAttribute("src");
  ui.twofaSecret.textContent = "";
  ui.recoveryCodes.replaceChildren(...res.data.recovery_codes.map((c) => el("li", c)));
  ui.recoveryBox.hidden = false;
  await refresh();
  app.say("Two-factor is on. Keep your recovery codes.");
}

async function onDisableTwoFactor(ev) {
  ev.preventDefault();
  clearErrors(ui.twofaDisable);
  const data = new FormData(ui.twofaDisable);
  const body = { code: String(data.get("code")).trim() };
  if (data.get("current_password")) body.current_password = String(data.get("current_password"));
  const res = await app.call("POST", own("/totp/disable"), { json: body });
  if (!res.ok) {
    showError(ui.twofaDisable, res.error, "Not turned off: ");
    return;
  }
  ui.twofaDisable.reset();
  ui.recoveryBox.hidden = true;
  ui.recoveryCodes.replaceChildren();
  await refresh();
  app.say("Two-factor is off.");
}

async function onChangePassword(ev) {
  ev.preventDefault();
  clearErrors(ui.passwordForm);
  const data = new FormData(ui.passwordForm);
  const res = await app.call("PUT", own("/password"), {
    json: {
      password: String(data.get("password")),
      current_password: String(data.get("current_password")),
    },
  });
  if (!res.ok) {
    showError(ui.passwordForm, res.error, "Not changed: ");
    return;
  }
  ui.passwordForm.reset();
  app.say("Password changed: your other sessions are signed out.");
}

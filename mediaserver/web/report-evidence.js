// Random mode's moderation pieces (app.js calls these): the evidence a reporter
// chooses to send with a report (two checkboxes in the report dialog, off by default
// and cleared after each report), and the `banned` error as a clear, lasting message
// with the ban's end (and, for a signed-in account, how to appeal).
"use strict";

const $ = (id) => document.getElementById(id);

/** The report's evidence fields, as ticked; the boxes are cleared for the next one. */
export function takeEvidence() {
  const chat = $("report-include-chat");
  const frame = $("report-include-frame");
  const fields = {};
  if (chat.checked) fields.include_chat = true;
  if (frame.checked) fields.include_frame = true;
  chat.checked = false;
  frame.checked = false;
  return fields;
}

/** "until 2026-12-06 07:00 UTC" for the error's `until` (ISO 8601 UTC), "for good" for null. */
export function banEnd(until) {
  if (typeof until !== "string" || !until) return "for good";
  const when = new Date(until);
  if (Number.isNaN(when.getTime())) return `until ${until}`;
  return `until ${when.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** Show a `banned` error (it stays until the next Start); signedIn adds how to appeal. */
export function showBanned(msg, signedIn) {
  $("banned-text").textContent =
    `You are banned by the moderators ${banEnd(msg.until)}. You cannot meet strangers until then.`;
  $("banned-appeal").hidden = !signedIn;
  $("banned-note").hidden = false;
  return $("banned-text").textContent;
}

export function hideBanned() {
  $("banned-note").hidden = true;
}

// People mode: calls between connections over the People socket (docs/protocol.md):
// `call` rings every free page of the peer (the server ends an unanswered ring after its
// own timeout), `call_incoming` shows Answer / Decline, `call_started` sends the offer
// (rtc.js, the same offer/answer as Random mode), `call_hangup` ends it.
//
// The server keeps the page's media session for the socket's life (one offer per
// connection), so the RTCPeerConnection outlives a call and the next call re-uses it;
// between calls the camera's tracks are turned off (black, silent) rather than stopped.
"use strict";

import { $ } from "./api.js";
import { PeerLink, getCamera } from "./rtc.js";
import * as socket from "./people-socket.js";

const ENDED = {
  hangup: "The call ended.",
  left: "They left the call.",
  declined: "They declined the call.",
  no_answer: "No answer.",
  busy: "They are busy.",
  unavailable: "They are not online.",
  cancelled: "The call was cancelled.",
  answered_elsewhere: "You answered on another page.",
  media_closed: "The media connection ended.",
};

const ui = {
  section: $("incoming-call"),
  state: $("call-state"),
  prompt: $("call-prompt"),
  answer: $("call-answer"),
  decline: $("call-decline"),
  stage: $("call-stage"),
  remote: $("people-remote"),
  local: $("people-local"),
  peerTag: $("call-peer-tag"),
  hangup: $("call-hangup"),
};

let app = null;
let link = null;
let camera = null;
// phase: "idle" | "calling" (ringing out) | "ringing" (incoming) | "started"
const call = { phase: "idle", id: null, peer: "", conversationId: null };

// Test hook, as Random mode's window.mediaserverClient: the call's connection.
window.mediaserverPeople = {
  get phase() { return call.phase; },
  get pc() { return link ? link.pc : null; },
};

export function init(shared) {
  app = shared;
  app.startCall = startCall;
  link = new PeerLink({
    remoteVideo: ui.remote,
    send: (type, fields) => socket.send(type, fields),
    onProblem: (text) => app.say(text),
    configuration: socket.rtcConfiguration,
  });
  ui.answer.addEventListener("click", onAnswer);
  ui.decline.addEventListener("click", () => {
    if (call.phase === "ringing") socket.send("call_decline", { call_id: call.id });
    over("You declined the call.");
  });
  ui.hangup.addEventListener("click", () => {
    if (call.id) socket.send("call_hangup", { call_id: call.id });
    if (call.phase === "calling" && !call.id) over("The call was cancelled.");
  });
  socket.on("call_ringing", onRinging);
  socket.on("call_incoming", onIncoming);
  socket.on("call_started", onStarted);
  socket.on("call_ended", onEnded);
  socket.on("answer", (msg) => link.onAnswer(msg.sdp));
  socket.on("error", onError);
  socket.on("closed", () => {
    link.close(); // the media session went with the socket
    if (call.phase !== "idle") over("The connection to the server was lost.");
  });
}

export function show() {}

export function reset() {
  link.close();
  over("");
  if (camera) {
    for (const track of camera.getTracks()) track.enabled = false;
  }
}

function render() {
  ui.section.hidden = call.phase === "idle";
  ui.prompt.hidden = call.phase !== "ringing";
  ui.stage.hidden = call.phase !== "started" && call.phase !== "calling";
  ui.hangup.hidden = call.phase !== "started" && call.phase !== "calling";
  ui.peerTag.textContent = call.peer || "Them";
  document.body.dataset.call = call.phase;
  // the socket stays open in Random mode too: the People tab shows a call is ringing
  const tab = $("mode-people");
  tab.classList.toggle("ringing", call.phase === "ringing");
  if (call.phase === "ringing") tab.setAttribute("aria-label", `People: ${call.peer} is calling`);
  else tab.removeAttribute("aria-label");
}

function setState(text) {
  ui.state.textContent = text;
}

async function cameraOn() {
  camera = await getCamera(ui.local);
  for (const track of camera.getTracks()) track.enabled = true;
  return camera;
}

function over(text) {
  call.phase = "idle";
  call.id = null;
  call.conversationId = null;
  if (camera) {
    for (const track of camera.getTracks()) track.enabled = false;
  }
  ui.remote.pause();
  render();
  setState(text);
  if (text) app.say(text);
}

// ---- calling out -----------------------------------------------------------------------------

async function startCall(conversationId, peer) {
  if (call.phase !== "idle") {
    app.say("You are in a call already: hang up first.");
    return;
  }
  call.phase = "calling";
  call.id = null;
  call.peer = peer;
  call.conversationId = conversationId;
  render();
  setState(`Starting the camera to call ${peer}…`);
  try {
    await cameraOn();
  } catch (err) {
    over(`Camera or microphone unavailable: ${err.message || err.name || err}`);
    return;
  }
  if (call.phase !== "calling") return;
  if (!socket.send("call", { conversation_id: conversationId })) {
    over("Not connected to the server yet: try again in a moment.");
    return;
  }
  setState(`Calling ${peer}…`);
  ui.hangup.focus();
}

function onRinging(msg) {
  if (call.phase !== "calling" || msg.conversation_id !== call.conversationId) return;
  call.id = msg.call_id;
  setState(`Ringing ${call.peer}…`);
}

// ---- calls in ---------------------------------------------------------------------------------

function onIncoming(msg) {
  if (call.phase !== "idle" || typeof msg.call_id !== "string") return;
  call.phase = "ringing";
  call.id = msg.call_id;
  call.conversationId = msg.conversation_id;
  call.peer = typeof msg.from === "string" ? msg.from : "A connection";
  render();
  setState(`${call.peer} is calling you.`);
  app.say(`${call.peer} is calling you.`);
  ui.answer.focus();
}

async function onAnswer() {
  if (call.phase !== "ringing") return;
  const id = call.id;
  ui.answer.disabled = true;
  try {
    await cameraOn();
  } catch (err) {
    socket.send("call_decline", { call_id: id });
    over(`Camera or microphone unavailable: ${err.message || err.name || err}`);
    return;
  } finally {
    ui.answer.disabled = false;
  }
  if (call.phase !== "ringing" || call.id !== id) return; // it ended meanwhile
  socket.send("call_answer", { call_id: id });
  setState("Connecting…");
}

// ---- in the call ------------------------------------------------------------------------------

function onStarted(msg) {
  if (call.id && msg.call_id !== call.id) return;
  call.phase = "started";
  call.id = msg.call_id;
  render();
  setState(`In a call with ${call.peer}.`);
  app.say(`In a call with ${call.peer}.`);
  if (link.pc) {
    ui.remote.srcObject = link.remoteStream; // the media session of an earlier call
    link.play();
  } else {
    link.ensureOffer(camera);
  }
  ui.hangup.focus();
}

function onEnded(msg) {
  if (!call.id || msg.call_id !== call.id) return;
  const reason = typeof msg.reason === "string" ? msg.reason : "hangup";
  if (reason === "media_closed") link.close();
  over(ENDED[reason] || "The call ended.");
}

function onError(msg) {
  const code = typeof msg.code === "string" ? msg.code : "error";
  if (code === "media_closed") link.close(); // a new offer on the next call
  if (msg.ref === "offer" && link.offerRefused()) return; // an ICE restart: the call goes on
  const calls = ["call", "call_answer", "call_decline", "call_hangup", "offer"];
  if (!calls.includes(msg.ref)) return;
  const why = typeof msg.message === "string" ? msg.message : code;
  if (msg.ref === "offer") {
    app.say(`Cannot start video: ${why}.`);
    link.close();
    return;
  }
  if (call.phase !== "idle") over(`The call did not go through: ${why}.`);
}

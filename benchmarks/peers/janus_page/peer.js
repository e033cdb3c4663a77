// One Janus VideoCall peer over Janus's HTTP API (no janus.js): create a session,
// attach janus.plugin.videocall, register ?name=..., then either call (the harness
// calls window.janusPage.call(username)) or accept an incomingcall. Half-trickle,
// as benchmarks/peers/janus_client.py: every candidate is in the SDP (we wait for
// gathering to complete), then one trickle {completed: true}. Events come from a
// long-poll GET on the session. The page is served with /janus proxied to Janus,
// so every request is same-origin.
"use strict";

const BASE = "/janus";
const params = new URLSearchParams(location.search);
const name = params.get("name") || "peer";

const page = {
  session: null,
  handle: null,
  registered: false,
  webrtcup: false,
  phase: "starting",
  error: null,
  call: (username) => call(username).catch(fail),
};
window.janusPage = page;
window.pc = null; // the harness reads getStats() from it

const statusEl = () => document.getElementById("status");

function setPhase(text) {
  page.phase = text;
  const el = statusEl();
  if (el) el.textContent = text;
}

function fail(err) {
  page.error = String(err && err.message ? err.message : err);
  setPhase(`error: ${page.error}`);
}

function transaction() {
  return Math.random().toString(36).slice(2, 14);
}

async function post(path, body) {
  const response = await fetch(BASE + path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ transaction: transaction(), ...body }),
  });
  const reply = await response.json();
  if (reply.janus === "error") {
    throw new Error(`janus ${body.janus}: ${JSON.stringify(reply.error)}`);
  }
  return reply;
}

function message(body, jsep) {
  return post(`/${page.session}/${page.handle}`, { janus: "message", body, ...(jsep ? { jsep } : {}) });
}

function trickleCompleted() {
  return post(`/${page.session}/${page.handle}`, { janus: "trickle", candidate: { completed: true } });
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") {
      resolve();
      return;
    }
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

// The fake camera and microphone; the harness's init script fixes the video
// constraints (the same for both targets). The answerer sets Janus's offer first,
// so addTrack reuses the offer's transceivers (addTransceiver would add new ones
// and leave the offered m-lines recvonly).
async function peerConnection(offer) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const remote = new MediaStream();
  document.getElementById("remote").srcObject = remote;
  pc.ontrack = (ev) => remote.addTrack(ev.track);
  if (offer) await pc.setRemoteDescription(offer);
  for (const track of stream.getTracks()) {
    const sender = pc.addTrack(track, stream);
    const transceiver = pc.getTransceivers().find((t) => t.sender === sender);
    // VP8 only, as mediaserver's answer picks: both targets carry the same codec
    if (track.kind === "video" && transceiver && RTCRtpReceiver.getCapabilities) {
      const codecs = RTCRtpReceiver.getCapabilities("video").codecs.filter(
        (c) => c.mimeType === "video/VP8" || c.mimeType === "video/rtx",
      );
      transceiver.setCodecPreferences(codecs);
    }
  }
  return pc;
}

async function call(username) {
  setPhase(`calling ${username}`);
  const pc = await peerConnection();
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const jsep = { type: "offer", sdp: pc.localDescription.sdp };
  await message({ request: "call", username }, jsep);
  await trickleCompleted();
}

async function accept(offer) {
  setPhase("answering");
  const pc = await peerConnection(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  await message({ request: "accept" }, { type: "answer", sdp: pc.localDescription.sdp });
  await trickleCompleted();
}

async function onEvent(event) {
  if (event.janus === "webrtcup") {
    page.webrtcup = true;
    setPhase("media up");
    return;
  }
  if (event.janus !== "event" || !event.plugindata) return;
  const data = event.plugindata.data || {};
  if (data.error) {
    fail(`videocall: ${data.error}`);
    return;
  }
  const result = data.result || {};
  if (result.event === "registered") {
    page.registered = true;
    setPhase(`registered as ${name}`);
  } else if (result.event === "incomingcall" && event.jsep) {
    await accept(event.jsep);
  } else if (result.event === "accepted" && event.jsep) {
    await window.pc.setRemoteDescription(event.jsep);
    setPhase("accepted");
  } else if (result.event === "hangup") {
    setPhase(`hung up: ${result.reason || ""}`);
  }
}

async function longPoll() {
  for (;;) {
    try {
      const response = await fetch(`${BASE}/${page.session}?maxev=10&rid=${Date.now()}`);
      const body = await response.json();
      for (const event of Array.isArray(body) ? body : [body]) await onEvent(event);
    } catch (err) {
      fail(err);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

async function start() {
  page.session = (await post("", { janus: "create" })).data.id;
  page.handle = (await post(`/${page.session}`, { janus: "attach", plugin: "janus.plugin.videocall" })).data.id;
  longPoll();
  await message({ request: "register", username: name });
}

start().catch(fail);

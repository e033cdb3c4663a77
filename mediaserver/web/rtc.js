// The WebRTC and signalling plumbing both modes share (app.js: Random, people-call.js:
// People): the /ws URL, opening the socket, the camera, and one RTCPeerConnection that
// offers to the server (ICE-lite, one candidate) and plays what it forwards.
//
// The server keeps a page's media session for the whole WebSocket connection (one
// offer per connection, docs/protocol.md), so a link offers once and its tracks are
// re-used by every later match or call on that connection.
"use strict";

export const PROTOCOL_VERSION = 1;

/** The signalling URL of this page's server. */
export function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** Open /ws. Resolves once open; `onMessage(msg)` gets each JSON object the server
 * sends, `onClose(ws, ev)` the close of an opened socket. */
export function openSocket(onMessage, onClose) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl());
    let opened = false;
    ws.onopen = () => {
      opened = true;
      resolve(ws);
    };
    ws.onerror = () => {
      if (!opened) reject(new Error("cannot reach the server"));
    };
    ws.onclose = (ev) => {
      if (!opened) reject(new Error("cannot reach the server"));
      else onClose(ws, ev);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && typeof msg === "object") onMessage(ws, msg);
    };
  });
}

/** Send one protocol message on `ws`; false when it is not open. */
export function sendOn(ws, type, fields = {}) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify({ v: PROTOCOL_VERSION, type, ...fields }));
  return true;
}

let camera = null; // one camera stream for the page: both modes show the same one

/** The camera and microphone (asked once per page), shown in `localVideo`. */
export async function getCamera(localVideo) {
  if (!camera) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser cannot use a camera here (a secure https page is needed)");
    }
    camera = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } },
    });
  }
  if (localVideo && localVideo.srcObject !== camera) {
    localVideo.srcObject = camera;
    localVideo.play().catch(() => {});
  }
  return camera;
}

/** welcome.ice_servers -> RTCIceServer objects (TURN relays, for networks that block
 * UDP); anything malformed is left out. */
export function iceServersFrom(list) {
  if (!Array.isArray(list)) return [];
  return list
    .filter((s) => s && Array.isArray(s.urls) && typeof s.username === "string"
      && typeof s.credential === "string")
    .map((s) => ({ urls: s.urls.filter((u) => typeof u === "string"),
      username: s.username, credential: s.credential }));
}

/** One RTCPeerConnection to the server: offer, take the answer, play the remote
 * tracks in `remoteVideo`. `send(type, fields)` sends on the signalling socket;
 * `onProblem(text)` reports a failure in words; `configuration()` gives the
 * RTCConfiguration (TURN servers from the welcome) at the time of the offer. */
export class PeerLink {
  constructor({ remoteVideo, send, onProblem, configuration = () => ({}) }) {
    this.remoteVideo = remoteVideo;
    this.configuration = configuration;
    this.send = send;
    this.onProblem = onProblem;
    this.pc = null;
    this.offered = false;
    this.remoteStream = null;
  }

  /** Offer from a new RTCPeerConnection, unless one exists already. */
  ensureOffer(localStream) {
    if (this.pc || !localStream) return;
    // The server is ICE-lite with a public candidate; TURN only where UDP is blocked.
    const pc = new RTCPeerConnection(this.configuration());
    this.pc = pc;
    this.offered = false;
    this.remoteStream = new MediaStream();
    this.remoteVideo.srcObject = this.remoteStream;
    for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    pc.ontrack = (ev) => {
      if (pc !== this.pc) return;
      this.remoteStream.addTrack(ev.track);
      this.play();
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && pc.connectionState === "failed") {
        this.onProblem("Media connection failed.");
      }
    };
    (async () => {
      try {
        await pc.setLocalDescription(await pc.createOffer());
        if (pc !== this.pc) return;
        this.offered = this.send("offer", { sdp: pc.localDescription.sdp });
      } catch (err) {
        if (pc === this.pc) this.onProblem(`Cannot start video: ${err.message || err}`);
      }
    })();
  }

  /** The server's answer to our offer. */
  async onAnswer(sdp) {
    const pc = this.pc;
    if (!pc || typeof sdp !== "string" || pc.signalingState !== "have-local-offer") return;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp });
    } catch (err) {
      this.onProblem(`Cannot use the server's answer: ${err.message || err}`);
    }
  }

  play() {
    const video = this.remoteVideo;
    if (!video.srcObject) return;
    video.play().catch(() => {
      // autoplay with sound refused (no user gesture yet): the next click plays it
      const resume = () => video.play().catch(() => {});
      document.addEventListener("click", resume, { once: true });
    });
  }

  close() {
    if (this.pc) {
      this.pc.ontrack = null;
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
    this.offered = false;
    this.remoteStream = null;
    this.remoteVideo.srcObject = null;
  }
}

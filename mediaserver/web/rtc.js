// The WebRTC and signalling plumbing both modes share (app.js: Random, people-call.js:
// People): the /ws URL, opening the socket, the camera, and one RTCPeerConnection that
// offers to the server (ICE-lite, one candidate) and plays what it forwards.
//
// The server keeps a page's media session for the whole WebSocket connection (one
// offer per connection, docs/protocol.md), so a link offers once and its tracks are
// re-used by every later match or call on that connection. When the network changes
// (Wi-Fi to cellular) the link restarts ICE: a second offer on the same session, with
// new ICE credentials and nothing else changed, and media resumes to the new address.
"use strict";

export const PROTOCOL_VERSION = 1;

// How long ICE may stay "disconnected" before the link restarts it: a blip that
// heals within a second needs no restart.
const DISCONNECTED_GRACE_MS = 1000;
// The server ends a session whose media has been silent for 4 s (its partner is
// told), and an ICE restart offer gives it 4 s from then. Browsers notice a dead path
// late (Chromium said nothing for 4 s with every packet dropped), so the link watches
// what it receives itself: the server sends media and a report every second, and
// nothing at all for this long means the path is gone.
const STALL_MS = 1500;
const STALL_CHECK_MS = 500;
// At most one restart per this long (the server rate-limits offers too).
const RESTART_INTERVAL_MS = 2000;

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
    this.answered = false; // the server answered our first offer: ICE may restart
    this.remoteStream = null;
    this.restarts = 0; // ICE restarts offered on this page (tests read it)
    this.restartsAnswered = 0;
    this.restartWanted = false; // restartIce() called; its negotiationneeded offers
    this.lastRestart = -Infinity;
    this.restartTimer = null;
    this.stallTimer = null;
    // A new network: the old address is gone, so restart at once rather than wait
    // for ICE to notice (several seconds). `online` fires when a network comes back;
    // navigator.connection (where the browser has it) when the network type changes.
    window.addEventListener("online", () => this.restartIce("online"));
    if (navigator.connection && navigator.connection.addEventListener) {
      navigator.connection.addEventListener("change", () => this.restartIce("network change"));
    }
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
        this.onProblem("Media connection lost; reconnecting…");
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const state = pc.iceConnectionState;
      if (state === "failed") {
        this.restartIce("failed");
      } else if (state === "disconnected") {
        this.schedule(DISCONNECTED_GRACE_MS, () => {
          if (pc === this.pc && pc.iceConnectionState === "disconnected") {
            this.restartIce("disconnected");
          }
        });
      } else if (state === "connected" || state === "completed") {
        this.schedule(null);
      }
    };
    this.watchStalls(pc);
    pc.onnegotiationneeded = async () => {
      // fired by restartIce() (and by addTrack before the first offer, which
      // ensureOffer makes itself): the restart offer goes as an ordinary `offer`
      if (pc !== this.pc || !this.restartWanted || pc.signalingState !== "stable") return;
      this.restartWanted = false;
      try {
        await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
        if (pc !== this.pc) return;
        if (this.send("offer", { sdp: pc.localDescription.sdp })) this.restarts += 1;
      } catch (err) {
        if (pc === this.pc) this.onProblem(`Cannot reconnect video: ${err.message || err}`);
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

  /** The server's answer to our offer (the first, or an ICE restart's). */
  async onAnswer(sdp) {
    const pc = this.pc;
    if (!pc || typeof sdp !== "string" || pc.signalingState !== "have-local-offer") return;
    const restart = this.answered;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp });
      this.answered = true;
      if (restart) this.restartsAnswered += 1;
    } catch (err) {
      this.onProblem(`Cannot use the server's answer: ${err.message || err}`);
    }
  }

  /** Restart ICE on the live connection (new credentials, same session): when the
   * network changed or ICE failed. False when there is nothing to restart yet, or a
   * restart is under way or was made less than RESTART_INTERVAL_MS ago (then it is
   * tried again once that passed, if ICE is still not connected). */
  restartIce(reason) {
    const pc = this.pc;
    if (!pc || !this.answered || pc.signalingState === "closed") return false;
    if (pc.signalingState !== "stable" || this.restartWanted) return false;
    const wait = this.lastRestart + RESTART_INTERVAL_MS - performance.now();
    if (wait > 0) {
      this.schedule(wait, () => {
        const state = pc.iceConnectionState;
        if (pc === this.pc && state !== "connected" && state !== "completed") {
          this.restartIce(reason);
        }
      });
      return false;
    }
    this.schedule(null);
    this.lastRestart = performance.now();
    this.restartWanted = true;
    pc.restartIce(); // negotiationneeded follows: onnegotiationneeded offers
    return true;
  }

  /** The server refused an `offer` of ours. A restart's is rolled back (the session
   * and its media go on as they were): true. False for a first offer. */
  offerRefused() {
    const pc = this.pc;
    if (!pc || !this.answered || pc.signalingState !== "have-local-offer") return false;
    pc.setLocalDescription({ type: "rollback" }).catch(() => {});
    return true;
  }

  /** Restart ICE when nothing at all arrives for STALL_MS on a connected link. */
  watchStalls(pc) {
    let last = -1;
    let since = performance.now();
    const check = async () => {
      if (pc !== this.pc) return;
      let received = 0;
      try {
        for (const s of (await pc.getStats()).values()) {
          if (s.type === "transport") received += s.bytesReceived || 0;
        }
      } catch {
        return;
      }
      const now = performance.now();
      const state = pc.iceConnectionState;
      if (received !== last || !this.answered || (state !== "connected" && state !== "completed"
          && state !== "disconnected")) {
        last = received;
        since = now;
      } else if (now - since >= STALL_MS && this.restartIce("stalled")) {
        since = now;
      }
      if (pc === this.pc) this.stallTimer = setTimeout(check, STALL_CHECK_MS);
    };
    this.stallTimer = setTimeout(check, STALL_CHECK_MS);
  }

  schedule(ms, action) {
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    this.restartTimer = ms === null ? null : setTimeout(() => {
      this.restartTimer = null;
      action();
    }, ms);
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
      this.pc.oniceconnectionstatechange = null;
      this.pc.onnegotiationneeded = null;
      this.pc.close();
    }
    this.schedule(null);
    if (this.stallTimer !== null) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    this.pc = null;
    this.offered = false;
    this.answered = false;
    this.restartWanted = false;
    this.remoteStream = null;
    this.remoteVideo.srcObject = null;
  }
}

// mediaserver browser client: signalling protocol v1 (docs/protocol.md).
//
// One WebSocket and one RTCPeerConnection per visit. The server forwards each new
// stranger's media into the same tracks, so Next never renegotiates. Everything
// that comes from the network is shown with textContent, never as HTML.
// The WebRTC and socket plumbing is rtc.js, shared with People mode's calls.
import {
  PeerLink, getCamera as openCamera, iceServersFrom, openSocket as openWs, sendOn,
} from "./rtc.js";
import { hideBanned, showBanned, takeEvidence } from "./report-evidence.js";

(() => {
  const MAX_INTERESTS = 10;
  const INTEREST_MAX_CHARS = 32;
  const TYPING_EVERY_MS = 2000; // at most one `typing` per this long
  const TYPING_SHOWN_MS = 3500; // how long "Stranger is typing…" stays up
  const FLASH_MS = 4000; // errors and notices in the status line
  const MAX_RECONNECTS = 5; // automatic reconnections after losing the server, between matches

  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $("start"),
    next: $("next"),
    stop: $("stop"),
    local: $("local"),
    remote: $("remote"),
    remoteBox: $("remote-box"),
    placeholderText: $("placeholder-text"),
    shared: $("shared"),
    status: $("status"),
    chatLog: $("chat-log"),
    chatForm: $("chat-form"),
    chatInput: $("chat-input"),
    chatSend: $("chat-send"),
    typing: $("typing"),
    report: $("report"),
    reportDialog: $("report-dialog"),
    reportReasons: $("report-reasons"),
    effect: $("effect"),
    reveal: $("reveal"),
    effectNote: $("effect-note"),
    ageConfirm: $("age-confirm"),
    ageLabel: $("age-label"),
    interests: $("interests"),
    account: $("account"),
    signinForm: $("signin-form"),
    signinUser: $("signin-user"),
    signinPass: $("signin-pass"),
    signinOtp: $("signin-otp"),
    signin: $("signin"),
    signedIn: $("signed-in"),
    signedInAs: $("signed-in-as"),
    signout: $("signout"),
    shareProfile: $("share-profile"),
  };

  // ---- state ------------------------------------------------------------------------
  //
  // phase: "idle"       no WebSocket, or connected and not queued (after stop)
  //        "connecting" camera + WebSocket + hello in progress
  //        "queued"     waiting for a stranger
  //        "matched"    talking to a stranger
  const st = {
    phase: "idle",
    ws: null,
    welcomed: false,
    link: null, // the PeerLink: one RTCPeerConnection per connection (set below)
    localStream: null,
    effect: "none", // the effect the user picked
    sentEffect: null, // the effect the server was last told is on
    lastTypingSent: 0,
    reportReasons: [], // from welcome.limits.report_reasons: the server's list
    iceServers: [], // from welcome.ice_servers: TURN relays (coturn), when the server has them
    typingTimer: null,
    baseStatus: "Press Start",
    flashTimer: null,
    strangerLeft: false, // show "Stranger left…" until the next match
    reconnects: 0, // automatic reconnections since the last match
    // Signed in (optional): the bearer token goes in `hello`, so the account counts
    // from the next connection. Kept in memory only: a reload is anonymous again.
    token: null,
    username: null,
  };

  // Debug/test hook: read-only view of the connection (nothing about the stranger).
  window.mediaserverClient = {
    get phase() { return st.phase; },
    get pc() { return st.link.pc; },
    get ws() { return st.ws; },
    // ICE restarts of this page's connection: offered, and answered by the server
    get restarts() { return { offered: st.link.restarts, answered: st.link.restartsAnswered }; },
  };

  // ---- status line ----------------------------------------------------------------------

  function setStatus(text) {
    st.baseStatus = text;
    if (st.flashTimer === null) ui.status.textContent = text;
    ui.status.classList.remove("flash");
  }

  function flash(text, ms = FLASH_MS) {
    ui.status.textContent = text;
    ui.status.classList.add("flash");
    clearTimeout(st.flashTimer);
    st.flashTimer = setTimeout(() => {
      st.flashTimer = null;
      ui.status.classList.remove("flash");
      ui.status.textContent = st.baseStatus;
    }, ms);
  }

  function clearFlash() {
    clearTimeout(st.flashTimer);
    st.flashTimer = null;
    ui.status.classList.remove("flash");
    ui.status.textContent = st.baseStatus;
  }

  // ---- phase -> controls ------------------------------------------------------------------

  function setPhase(phase) {
    st.phase = phase;
    const connected = st.ws !== null;
    const matched = phase === "matched";
    ui.start.disabled = phase !== "idle";
    ui.next.disabled = !matched;
    ui.stop.disabled = !(matched || phase === "queued");
    ui.report.disabled = !matched;
    if (!matched) ui.reveal.hidden = true;
    ui.chatInput.disabled = !matched;
    ui.chatSend.disabled = !matched;
    // hello is sent once per connection: these apply to the next connection
    ui.ageConfirm.disabled = connected;
    ui.interests.disabled = connected;
    // the account goes in hello too: it can change between visits (an idle
    // connection is dropped for it)
    ui.signin.disabled = phase !== "idle";
    ui.signout.disabled = phase !== "idle";
    ui.shareProfile.hidden = !(matched && st.token);
    ui.remoteBox.classList.toggle("waiting", !matched);
    ui.placeholderText.textContent =
      phase === "queued" || phase === "connecting" ? "Looking for someone…" : "Nobody here yet";
    ui.remoteBox.classList.toggle("searching", phase === "queued" || phase === "connecting");
    document.body.dataset.phase = phase;
    document.body.dataset.connected = connected ? "yes" : "no";
    if (!matched) {
      hideTyping();
      ui.shared.hidden = true;
      if (ui.reportDialog.open) ui.reportDialog.close("cancel");
    }
  }

  // ---- chat log ---------------------------------------------------------------------------

  function addLine(who, text) {
    const li = document.createElement("li");
    li.className = who;
    if (who === "you" || who === "stranger") {
      const name = document.createElement("b");
      name.textContent = who === "you" ? "You: " : "Stranger: ";
      li.append(name, document.createTextNode(text));
    } else {
      li.textContent = text;
    }
    ui.chatLog.append(li);
    ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  }

  function clearChat() {
    ui.chatLog.replaceChildren();
    hideTyping();
  }

  function showTyping() {
    ui.typing.hidden = false;
    clearTimeout(st.typingTimer);
    st.typingTimer = setTimeout(hideTyping, TYPING_SHOWN_MS);
  }

  function hideTyping() {
    clearTimeout(st.typingTimer);
    st.typingTimer = null;
    ui.typing.hidden = true;
  }

  // ---- signalling ---------------------------------------------------------------------------

  function send(type, fields = {}) {
    return sendOn(st.ws, type, fields);
  }

  function parseInterests(text) {
    const out = [];
    for (const raw of text.split(",")) {
      const item = raw.trim().toLowerCase().slice(0, INTEREST_MAX_CHARS);
      if (item && !out.includes(item)) out.push(item);
      if (out.length === MAX_INTERESTS) break;
    }
    return out;
  }

  function openSocket() {
    return openWs((ws, msg) => {
      if (ws === st.ws) onMessage(msg);
    }, onSocketClosed);
  }

  function onSocketClosed(ws, ev) {
    if (ws !== st.ws) return;
    const wasActive = st.phase === "queued" || st.phase === "matched";
    st.ws = null;
    st.welcomed = false;
    closePeerConnection();
    setPhase("idle");
    const why = ev.code === 1000 ? "" : ` (code ${ev.code})`;
    clearFlash();
    if (wasActive && ev.code !== 1000 && st.reconnects < MAX_RECONNECTS) {
      // the server node we were on went away (or drains): the load balancer sends
      // the new connection to another node, and we queue again there
      st.reconnects += 1;
      setStatus(`Connection lost${why} — reconnecting…`);
      setTimeout(() => {
        if (st.phase === "idle" && !st.ws) onStart();
      }, 1000 * st.reconnects);
      return;
    }
    setStatus(`Disconnected from the server${why}. Press Start to reconnect.`);
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "welcome":
        st.welcomed = true;
        if (msg.limits && Number.isInteger(msg.limits.chat_max_chars)) {
          ui.chatInput.maxLength = msg.limits.chat_max_chars;
        }
        if (msg.limits && Array.isArray(msg.limits.report_reasons)) {
          setReportReasons(msg.limits.report_reasons);
        }
        st.iceServers = iceServersFrom(msg.ice_servers);
        syncEffect();
        send("start");
        break;
      case "queued":
        setPhase("queued");
        setStatus(st.strangerLeft ? "Stranger left — finding someone new…" : "Looking for someone…");
        ensureOffer();
        break;
      case "answer":
        onAnswer(msg.sdp);
        break;
      case "reoffer":
        // our pair's media is on another server node: a fresh connection offers there
        closePeerConnection();
        ensureOffer();
        if (st.phase === "matched") playRemote();
        break;
      case "matched":
        onMatched(msg);
        break;
      case "revealed":
        onRevealed(msg);
        break;
      case "video_withheld":
        onVideoWithheld(msg);
        break;
      case "partner_left":
        st.strangerLeft = true;
        setPhase("queued"); // re-queued by the server; `queued` follows
        addLine("system", "Stranger left.");
        setStatus("Stranger left — finding someone new…");
        break;
      case "chat":
        if (typeof msg.text === "string" && st.phase === "matched") {
          hideTyping();
          addLine("stranger", msg.text);
        }
        break;
      case "typing":
        if (st.phase === "matched") showTyping();
        break;
      case "stopped":
        st.strangerLeft = false;
        setPhase("idle");
        setStatus("Stopped. Press Start to meet someone.");
        break;
      case "reported":
        flash("Thanks, your report was recorded.");
        break;
      case "effect":
        onEffectEcho(msg);
        break;
      case "profile_shared":
        ui.shareProfile.disabled = true;
        addLine("system", "You shared your profile with this stranger.");
        break;
      case "profile_card":
        if (st.phase === "matched" && msg.card && typeof msg.card === "object") showCard(msg.card);
        break;
      case "error":
        onError(msg);
        break;
      default:
        break; // newer servers may send more
    }
  }

  function onMatched(msg) {
    st.strangerLeft = false;
    st.reconnects = 0;
    clearChat();
    setPhase("matched");
    clearFlash();
    setStatus("Connected");
    const shared = Array.isArray(msg.shared_interests)
      ? msg.shared_interests.filter((s) => typeof s === "string")
      : [];
    addLine("system", "You are now talking to a stranger. Say hi!");
    if (shared.length) {
      const text = `You both like: ${shared.join(", ")}`;
      ui.shared.textContent = text;
      ui.shared.hidden = false;
      addLine("system", text);
    }
    // mutual reveal: faces stay covered by the server until both press Reveal
    ui.reveal.hidden = msg.hidden !== true;
    ui.reveal.disabled = false;
    ui.shareProfile.disabled = false; // each match starts anonymous again
    if (msg.hidden === true) addLine("system", "Faces are hidden. Press Reveal to show yours when you both agree.");
    playRemote();
  }

  function onVideoWithheld(msg) {
    // mutual reveal: a face the server could not cover is not sent at all
    if (st.phase !== "matched") return;
    if (msg.whose === "partner") {
      ui.remoteBox.classList.add("waiting");
      ui.placeholderText.textContent = "The stranger's face could not be covered: no video";
      addLine("system", "The server could not cover the stranger's face, so it does not show " +
        "their video. You can still talk and chat.");
    } else if (msg.whose === "yours") {
      addLine("system", "The server could not cover your face, so it does not send your " +
        "video. The stranger still hears you and can chat.");
    }
  }

  function onRevealed(msg) {
    if (msg.by === "both") {
      ui.remoteBox.classList.remove("waiting"); // a withheld video flows once both agreed
      ui.reveal.hidden = true;
      addLine("system", "You both revealed: faces are visible now.");
    } else if (msg.by === "partner") {
      addLine("system", "The stranger pressed Reveal.");
    }
  }

  function onError(msg) {
    const code = typeof msg.code === "string" ? msg.code : "error";
    const text = typeof msg.message === "string" ? msg.message : "";
    if (msg.ref === "offer" && st.link.offerRefused()) {
      // an ICE restart refused: the media session goes on as it was
      flash(`Cannot reconnect video: ${text || code}`);
      return;
    }
    if (code === "media_closed") {
      // our media session is gone (`stopped` follows): a fresh RTCPeerConnection
      // offers on the next start
      closePeerConnection();
    } else if (code === "offer_rejected" || code === "server_full") {
      // no media: leave the queue rather than meet someone with a black screen
      closePeerConnection();
      if (st.phase === "queued" || st.phase === "matched") send("stop");
    }
    if (msg.ref === "hello") {
      // not welcomed (a token the server does not know, an account under 18): this
      // connection is no use; drop it without the reconnect a lost server gets
      dropConnection();
      if (code === "unauthorized") setSignedIn(null, null);
      setStatus("Press Start");
    } else if (msg.ref === "start" && st.phase === "connecting") {
      setPhase("idle"); // not queued (refused, rate limited): Start can try again
      setStatus("Press Start");
    } else if (code === "refused" || code === "banned") {
      setPhase("idle"); // a re-queue after the stranger left was refused
      setStatus("Press Start");
    }
    if (code === "banned") {
      clearFlash();
      setStatus(showBanned(msg, st.token !== null)); // lasting, not a flash
      return;
    }
    flash(text ? `Error: ${text} (${code})` : `Error: ${code}`);
  }

  // ---- account (optional) ---------------------------------------------------------------------

  function setSignedIn(token, username) {
    st.token = token;
    st.username = username;
    ui.signinForm.hidden = token !== null;
    ui.signedIn.hidden = token === null;
    ui.signedInAs.textContent = token === null ? "" : `Signed in as ${username}`;
    document.body.dataset.signedIn = token === null ? "no" : "yes";
    setPhase(st.phase);
  }

  async function apiError(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && typeof body.error.message === "string") return body.error.message;
    } catch {
      // not JSON: fall through
    }
    return `the server answered ${resp.status}`;
  }

  function dropConnection() {
    // the next Start opens a new connection, whose hello carries the account;
    // st.ws is cleared first, so the close is not taken for a lost server
    const ws = st.ws;
    st.ws = null;
    st.welcomed = false;
    if (ws) ws.close(1000);
    closePeerConnection();
    setPhase("idle");
  }

  async function onSignIn(ev) {
    ev.preventDefault();
    if (st.phase !== "idle" || st.token) return;
    dropConnection(); // connected but idle (after Stop), or not connected
    const body = { username: ui.signinUser.value.trim(), password: ui.signinPass.value };
    const otp = ui.signinOtp.value.trim();
    if (otp) body.otp = otp;
    ui.signin.disabled = true;
    try {
      const resp = await fetch("/api/v1/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        cache: "no-store",
      });
      if (resp.status !== 201) {
        flash(`Cannot sign in: ${await apiError(resp)}`, 6000);
        return;
      }
      const data = await resp.json();
      if (typeof data.token !== "string") throw new Error("no token in the answer");
      ui.signinPass.value = "";
      ui.signinOtp.value = "";
      setSignedIn(data.token, body.username);
      flash("Signed in: press Start.");
    } catch (err) {
      flash(`Cannot sign in: ${err.message || err}`, 6000);
    } finally {
      ui.signin.disabled = st.phase !== "idle";
    }
  }

  async function onSignOut() {
    if (st.phase !== "idle" || !st.token) return;
    dropConnection(); // connected but idle (after Stop), or not connected
    const token = st.token;
    setSignedIn(null, null); // forgotten here at once, whatever the server says
    try {
      await fetch("/api/v1/sessions/current", {
        method: "DELETE",
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
      });
    } catch {
      // offline: the token expires on its own
    }
    flash("Signed out.");
  }

  function showCard(card) {
    // the stranger's public card: text as text, the photo only from our own API
    const li = document.createElement("li");
    li.className = "system card";
    const photo = typeof card.photo_url === "string" ? card.photo_url : "";
    if (/^\/api\/v1\/photos\/[A-Za-z0-9_-]+$/.test(photo)) {
      const img = document.createElement("img");
      img.src = photo;
      img.alt = "";
      img.referrerPolicy = "no-referrer";
      li.append(img);
    }
    const text = document.createElement("div");
    const title = document.createElement("p");
    const handle = typeof card.handle === "string" ? card.handle : "";
    title.textContent = `The stranger shared their profile: ${handle}`;
    text.append(title);
    if (typeof card.bio === "string" && card.bio) {
      const bio = document.createElement("p");
      bio.textContent = card.bio;
      text.append(bio);
    }
    const interests = Array.isArray(card.interests)
      ? card.interests.filter((i) => typeof i === "string")
      : [];
    if (interests.length) {
      const likes = document.createElement("p");
      likes.textContent = `Likes: ${interests.join(", ")}`;
      text.append(likes);
    }
    li.append(text);
    ui.chatLog.append(li);
    ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  }

  // ---- media -------------------------------------------------------------------------------

  async function getCamera() {
    st.localStream = await openCamera(ui.local);
    return st.localStream;
  }

  // Random mode's RTCConfiguration (PeerLink asks at each offer). The server is ICE-lite
  // with a public candidate; TURN (welcome.ice_servers) is for networks that block UDP.
  function rtcConfiguration() {
    return st.iceServers.length ? { iceServers: st.iceServers } : {};
  }

  function ensureOffer() {
    st.link.ensureOffer(st.localStream);
  }

  function onAnswer(sdp) {
    return st.link.onAnswer(sdp);
  }

  function playRemote() {
    st.link.play();
  }

  function closePeerConnection() {
    st.link.close();
  }

  // ---- effects ------------------------------------------------------------------------------

  function syncEffect() {
    // one effect at a time: turn the old one off, the new one on
    if (!st.welcomed) return;
    const want = st.effect === "none" ? null : st.effect;
    if (st.sentEffect === want) return;
    if (st.sentEffect) send("effect", { name: st.sentEffect, on: false });
    if (want) send("effect", { name: want, on: true });
    st.sentEffect = want;
  }

  function onEffectEcho(msg) {
    if (typeof msg.name !== "string" || msg.name !== st.effect || msg.on !== true) {
      if (st.effect === "none") ui.effectNote.hidden = true;
      return;
    }
    ui.effectNote.hidden = false;
    ui.effectNote.textContent = msg.applied
      ? "Effect on."
      : "The effect starts once you are connected.";
  }

  // ---- user actions -------------------------------------------------------------------------

  async function onStart() {
    if (st.phase !== "idle") return;
    if (!ui.ageConfirm.checked) {
      ui.ageLabel.classList.add("attention");
      ui.ageConfirm.focus();
      flash("Please confirm you are 18 or older first.");
      return;
    }
    ui.ageLabel.classList.remove("attention");
    hideBanned();
    if (st.ws && st.welcomed) {
      // connected and idle (after Stop): just queue again
      st.strangerLeft = false;
      setPhase("connecting");
      setStatus("Looking for someone…");
      send("start");
      return;
    }
    st.strangerLeft = false;
    setPhase("connecting");
    clearFlash();
    setStatus("Starting camera…");
    try {
      await getCamera();
    } catch (err) {
      setPhase("idle");
      setStatus("Press Start");
      flash(`Camera or microphone unavailable: ${err.message || err.name || err}`, 8000);
      return;
    }
    setStatus("Connecting…");
    let ws;
    try {
      ws = await openSocket();
    } catch (err) {
      setPhase("idle");
      setStatus("Cannot reach the server. Press Start to try again.");
      return;
    }
    st.ws = ws;
    st.welcomed = false;
    st.sentEffect = null;
    setPhase("connecting");
    setStatus("Looking for someone…");
    const hello = { age_confirmed: true };
    const interests = parseInterests(ui.interests.value);
    if (interests.length) hello.interests = interests;
    if (st.token) hello.token = st.token;
    send("hello", hello);
  }

  function onNext() {
    if (st.phase !== "matched" && st.phase !== "queued") return;
    if (st.phase === "matched") {
      st.strangerLeft = false;
      // the server answers `queued` (or an error, and we stay matched)
      if (send("next")) addLine("system", "You skipped.");
    }
  }

  function onStop() {
    if (st.phase !== "matched" && st.phase !== "queued") return;
    send("stop"); // `stopped` makes the page idle
  }

  function onChatSubmit(ev) {
    ev.preventDefault();
    const text = ui.chatInput.value.trim();
    if (!text || st.phase !== "matched") return;
    if (send("chat", { text: text.slice(0, ui.chatInput.maxLength) })) {
      addLine("you", text);
      ui.chatInput.value = "";
      st.lastTypingSent = 0;
    }
  }

  function onChatInput() {
    if (st.phase !== "matched" || !ui.chatInput.value) return;
    const now = Date.now();
    if (now - st.lastTypingSent >= TYPING_EVERY_MS) {
      st.lastTypingSent = now;
      send("typing");
    }
  }

  // Display names for the reasons the server sends; an unknown one shows as sent.
  const REASON_LABELS = { underage: "Under 18" };

  function setReportReasons(reasons) {
    st.reportReasons = reasons.filter((r) => typeof r === "string");
    ui.reportReasons.replaceChildren(
      ...st.reportReasons.map((reason) => {
        const button = document.createElement("button");
        button.type = "submit";
        button.value = reason;
        button.className = "btn";
        button.textContent = REASON_LABELS[reason] || reason.charAt(0).toUpperCase() + reason.slice(1);
        return button;
      }),
    );
  }

  function onReport() {
    if (st.phase !== "matched") return;
    if (typeof ui.reportDialog.showModal === "function") {
      ui.reportDialog.returnValue = "cancel";
      ui.reportDialog.showModal();
    } else {
      const reason = window.prompt(`Reason: ${st.reportReasons.join(", ")}`, "other");
      sendReport((reason || "").trim().toLowerCase());
    }
  }

  function sendReport(reason) {
    const evidence = takeEvidence(); // the boxes start unticked for every report
    if (!st.reportReasons.includes(reason)) return;
    if (st.phase !== "matched") return;
    if (send("report", { reason, ...evidence })) addLine("system", "You reported the stranger.");
  }

  function onEffectChange() {
    st.effect = ui.effect.value;
    if (st.effect === "none") ui.effectNote.hidden = true;
    syncEffect();
  }

  ui.start.addEventListener("click", onStart);
  ui.next.addEventListener("click", onNext);
  ui.stop.addEventListener("click", onStop);
  ui.chatForm.addEventListener("submit", onChatSubmit);
  ui.chatInput.addEventListener("input", onChatInput);
  ui.report.addEventListener("click", onReport);
  ui.reportDialog.addEventListener("close", () => sendReport(ui.reportDialog.returnValue));
  ui.effect.addEventListener("change", onEffectChange);
  ui.reveal.addEventListener("click", () => {
    send("reveal", {});
    ui.reveal.disabled = true;
    addLine("system", "You pressed Reveal.");
  });
  ui.signinForm.addEventListener("submit", onSignIn);
  ui.signout.addEventListener("click", onSignOut);
  ui.shareProfile.addEventListener("click", () => {
    if (st.phase === "matched" && st.token) send("share_profile");
  });
  ui.ageConfirm.addEventListener("change", () => {
    if (ui.ageConfirm.checked) ui.ageLabel.classList.remove("attention");
  });
  document.addEventListener("keydown", (ev) => {
    // Esc skips, as on the classic sites, unless a dialog or a text field has it
    if (ev.key !== "Escape" || ui.reportDialog.open) return;
    const tag = document.activeElement && document.activeElement.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    onNext();
  });
  window.addEventListener("pagehide", () => {
    if (st.ws) {
      send("bye");
      st.ws.close(1000);
    }
  });

  st.link = new PeerLink({
    remoteVideo: ui.remote,
    send,
    onProblem: (text) => flash(text),
    configuration: rtcConfiguration,
  });
  ui.effect.value = "none";
  setSignedIn(null, null); // also sets the phase: idle
  setPhase("idle");
})();

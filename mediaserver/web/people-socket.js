// People mode's own signalling WebSocket (docs/protocol.md, "Connections: direct
// messages and calls"): `hello` carries the session token, so direct messages and
// calls reach this page. It is not Random mode's socket: this one never queues for a
// stranger. The sections subscribe to message types with on(type, fn).
"use strict";

import { iceServersFrom, openSocket, sendOn } from "./rtc.js";

const RECONNECT_MS = [1000, 2000, 5000, 10000]; // after losing the server, then every 10 s

const listeners = new Map(); // type -> [fn(msg)]
const st = {
  token: null, // the token the socket is (or should be) signed in with
  ws: null,
  connecting: false,
  welcomed: false,
  limits: null, // welcome.limits
  iceServers: [], // welcome.ice_servers: TURN relays, when the server has them
  retries: 0,
  timer: null,
};

/** Call fn(msg) for every server message of `type` ("open"/"closed" for the socket's
 * own state). */
export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, []);
  listeners.get(type).push(fn);
}

function emit(type, msg) {
  for (const fn of listeners.get(type) || []) {
    try {
      fn(msg);
    } catch (err) {
      console.warn(`people socket: ${type} handler failed`, err);
    }
  }
}

export function ready() {
  return st.welcomed;
}

export function limits() {
  return st.limits;
}

/** The RTCConfiguration for a call: the TURN servers of the last welcome. */
export function rtcConfiguration() {
  return st.iceServers.length ? { iceServers: st.iceServers } : {};
}

/** Send one message; false when the socket is not welcomed (yet). */
export function send(type, fields = {}) {
  if (!st.welcomed) return false;
  return sendOn(st.ws, type, fields);
}

/** Open the socket for this token (nothing when it is open for it already). */
export async function connect(token) {
  if (st.token === token && (st.ws || st.connecting)) return;
  disconnect();
  st.token = token;
  st.connecting = true;
  let ws;
  try {
    ws = await openSocket((from, msg) => {
      if (from === st.ws) onMessage(msg);
    }, onClosed);
  } catch {
    if (st.token === token) retry();
    return;
  } finally {
    st.connecting = false;
  }
  if (st.token !== token) {
    ws.close(1000); // signed out (or in as another) meanwhile
    return;
  }
  st.ws = ws;
  sendOn(ws, "hello", { age_confirmed: true, token });
}

/** Close the socket (signing out): no reconnection. */
export function disconnect() {
  clearTimeout(st.timer);
  st.timer = null;
  st.token = null;
  st.retries = 0;
  const ws = st.ws;
  const was = st.welcomed;
  st.ws = null;
  st.welcomed = false;
  if (ws) {
    sendOn(ws, "bye");
    ws.close(1000);
  }
  if (was) emit("closed", { reason: "signed out" });
}

function onMessage(msg) {
  if (msg.type === "welcome") {
    st.welcomed = true;
    st.retries = 0;
    st.limits = msg.limits && typeof msg.limits === "object" ? msg.limits : null;
    st.iceServers = iceServersFrom(msg.ice_servers);
    emit("open", msg);
    return;
  }
  if (msg.type === "error" && msg.ref === "hello") {
    // the token is not (or no longer) good: no point retrying with it
    const token = st.token;
    disconnect();
    emit("refused", { ...msg, token });
    return;
  }
  if (typeof msg.type === "string") emit(msg.type, msg);
}

function onClosed(ws) {
  if (ws !== st.ws) return;
  st.ws = null;
  const was = st.welcomed;
  st.welcomed = false;
  if (was) emit("closed", { reason: "lost" });
  if (st.token) retry();
}

function retry() {
  const token = st.token;
  const wait = RECONNECT_MS[Math.min(st.retries, RECONNECT_MS.length - 1)];
  st.retries += 1;
  clearTimeout(st.timer);
  st.timer = setTimeout(() => {
    st.timer = null;
    if (st.token === token && !st.ws) {
      st.token = null; // so connect() opens anew
      connect(token);
    }
  }, wait);
}

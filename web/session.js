// One call's WebRTC side: the peer connection, its data channel, offer/answer and trickle ICE
// through signaling, renegotiation, keep-alive pings, and hang-up.
//
// It negotiates the way @pipecat-ai/small-webrtc-transport does: audio is the first
// transceiver (sendrecv), the client opens a data channel labelled "chat", the first offer
// carries pc_id null, candidates are PATCHed once the answer has given us a pc_id, and a
// "renegotiate" request on the channel gets a fresh offer for the same pc_id.
//
// Events (CustomEvent detail):
//   "state"    {connection, ice}          peer connection state changes
//   "open"     {}                         data channel open, client-ready sent
//   "track"    {stream}                   the bot's audio arrived
//   "message"  {type, data, id}           an RTVI message from the bot
//   "restart"  {}                         reconnecting with a new peer connection
//   "ended"    {reason, error}            the call is over (once); reason is "hangup",
//                                         "peer_left" (the bot ended it), "ice_failed" (never
//                                         connected), "connection_lost" or "abandoned"

import { CHANNEL_LABEL, PING_INTERVAL_MS, clientReady, parseMessage, ping, trackStatus } from "./rtvi.js";

/** A call that has not connected by then is an ICE failure (the bot gives up too). */
const CONNECT_TIMEOUT_MS = 15000;
/** Candidates gathered within this window go out in one PATCH. */
const CANDIDATE_BATCH_MS = 40;
/** A connection "disconnected" this long is restarted, as the official client does. */
const DISCONNECTED_GRACE_MS = 5000;
/** Restarts (new peer connection, restart_pc) after a connected call loses its path. */
const MAX_RESTARTS = 1;
/** How long Hang up waits for signaling before closing the peer anyway. */
const HANGUP_WAIT_MS = 4000;

export class Call extends EventTarget {
  /**
   * @param {{client: import("./signaling.js").SignalingClient, sessionId: string,
   *          iceServers: RTCIceServer[], stream: MediaStream,
   *          relayOnly?: boolean}} options relayOnly: TURN only (iceTransportPolicy "relay")
   */
  constructor({ client, sessionId, iceServers, stream, relayOnly = false }) {
    super();
    this.client = client;
    this.sessionId = sessionId;
    this.iceServers = iceServers;
    this.relayOnly = relayOnly;
    this.stream = stream;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {string|null} the bot's id for our peer connection, from the answer */
    this.pcId = null;
    /** @type {RTCDataChannel|null} */
    this.channel = null;
    this.everConnected = false;
    this.closed = false;
    /** Completed offer/answer exchanges, renegotiations and restarts included. */
    this.negotiations = 0;
    this._candidates = [];
    this._endOfCandidatesQueued = false;
    this._canTrickle = false;
    this._batchTimer = null;
    this._pingTimer = null;
    this._connectTimer = null;
    this._graceTimer = null;
    this._readySent = false;
    this._hangingUp = false;
    this._told = false;
    this._restarts = 0;
    this._queue = Promise.resolve();
  }

  /** Create the peer connection and make the first offer. Rejects with an ApiError. */
  async connect() {
    this._newPeer();
    await this._negotiate(false);
    this._armConnectTimer();
  }

  /**
   * Hang up: signaling ends the call (so it is recorded as a hang-up, not as a vanished
   * peer), then the peer closes. Safe to call twice; never rejects.
   */
  async hangup() {
    if (this.closed || this._hangingUp) return;
    this._hangingUp = true;
    this._stopPing();
    try {
      await this.client.hangup(this.sessionId, { timeoutMs: HANGUP_WAIT_MS });
      this._told = true;
    } catch (err) {
      console.warn("voicebots: hang-up request failed", err);
    }
    this._end("hangup");
  }

  /**
   * End now without waiting (a closing page, a call whose start failed); the DELETE is sent
   * with keepalive so it outlives the page.
   */
  abandon() {
    this._hangingUp = false;
    this._told = false;
    this._end("abandoned");
  }

  /** Send an object as JSON on the data channel; false if it is not open. */
  send(message) {
    const channel = this.channel;
    if (!channel || channel.readyState !== "open") return false;
    channel.send(typeof message === "string" ? message : JSON.stringify(message));
    return true;
  }

  _newPeer() {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.relayOnly ? "relay" : "all",
      bundlePolicy: "max-bundle",
    });
    const [track] = this.stream.getAudioTracks();
    pc.addTransceiver(track, { direction: "sendrecv", streams: [this.stream] });
    const channel = pc.createDataChannel(CHANNEL_LABEL, { ordered: true });
    const current = () => pc === this.pc && !this.closed;
    pc.addEventListener("icecandidate", (e) => current() && this._queueCandidate(e.candidate));
    pc.addEventListener("track", (e) => current() && this._emit("track", {
      stream: e.streams[0] || new MediaStream([e.track]),
    }));
    pc.addEventListener("connectionstatechange", () => current() && this._onState());
    pc.addEventListener("iceconnectionstatechange", () => current() && this._onState());
    channel.addEventListener("open", () => current() && this._onOpen());
    channel.addEventListener("message", (e) => current() && this._onMessage(e.data));
    channel.addEventListener("close", () => {
      if (channel === this.channel) this._stopPing();
    });
    this.pc = pc;
    this.channel = channel;
    this._candidates = [];
    this._endOfCandidatesQueued = false;
    this._canTrickle = false;
  }

  /** Offer → answer for the current peer; serialized so two never overlap. */
  _negotiate(restartPc) {
    const run = async () => {
      const pc = this.pc;
      if (!pc || this.closed) return;
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await this.client.offer(this.sessionId, {
        sdp: pc.localDescription.sdp,
        pcId: this.pcId,
        restartPc,
      });
      if (pc !== this.pc || this.closed) return;
      this.pcId = answer.pc_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.negotiations += 1;
      this._canTrickle = true;
      this._flushCandidates();
    };
    const next = this._queue.then(run);
    this._queue = next.catch(() => {});
    return next;
  }

  _queueCandidate(candidate) {
    if (candidate && candidate.candidate) {
      this._candidates.push({
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid,
        sdp_mline_index: candidate.sdpMLineIndex,
      });
    } else if (!this._endOfCandidatesQueued) {
      // null (or an empty candidate) ends gathering; an empty string tells the bot so.
      this._endOfCandidatesQueued = true;
      const first = this.pc && this.pc.getTransceivers()[0];
      this._candidates.push({
        candidate: "",
        sdp_mid: (candidate && candidate.sdpMid) || (first && first.mid) || "0",
        sdp_mline_index: 0,
      });
    }
    if (this._canTrickle && this._batchTimer === null) {
      this._batchTimer = setTimeout(() => this._flushCandidates(), CANDIDATE_BATCH_MS);
    }
  }

  _flushCandidates() {
    clearTimeout(this._batchTimer);
    this._batchTimer = null;
    if (!this._canTrickle || !this.pcId || this._candidates.length === 0 || this.closed) return;
    const batch = this._candidates.splice(0, this._candidates.length);
    this.client.addCandidates(this.sessionId, this.pcId, batch).catch((err) => {
      // A lost PATCH only costs a candidate pair; ICE failure is reported by the peer.
      console.warn("voicebots: could not send ICE candidates", err);
    });
  }

  _onOpen() {
    const [track] = this.stream.getAudioTracks();
    this.send(trackStatus(Boolean(track && track.enabled)));
    if (!this._readySent) {
      this._readySent = true;
      this.send(clientReady());
    }
    this._stopPing();
    this.send(ping());
    this._pingTimer = setInterval(() => this.send(ping()), PING_INTERVAL_MS);
    this._emit("open", {});
  }

  _onMessage(raw) {
    const message = parseMessage(raw);
    if (!message) return;
    if (message.kind === "signalling") {
      if (message.type === "renegotiate") {
        this._negotiate(false).catch((err) => console.warn("voicebots: renegotiation failed", err));
      } else if (message.type === "peerLeft") {
        this._end("peer_left");
      }
      return;
    }
    this._emit("message", { type: message.type, data: message.data, id: message.id });
  }

  _onState() {
    const pc = this.pc;
    this._emit("state", { connection: pc.connectionState, ice: pc.iceConnectionState });
    const state = pc.connectionState;
    if (state === "connected") {
      this.everConnected = true;
      clearTimeout(this._connectTimer);
      clearTimeout(this._graceTimer);
      this._graceTimer = null;
    } else if (state === "failed") {
      this._lostPath();
    } else if (state === "disconnected" && this._graceTimer === null) {
      this._graceTimer = setTimeout(() => {
        this._graceTimer = null;
        if (this.pc === pc && pc.connectionState === "disconnected") this._lostPath();
      }, DISCONNECTED_GRACE_MS);
    }
  }

  _lostPath() {
    if (this.closed) return;
    if (!this.everConnected && this._restarts === 0) {
      this._end("ice_failed");
    } else if (this._restarts >= MAX_RESTARTS) {
      this._end("connection_lost");
    } else {
      this._restart();
    }
  }

  /** A new peer connection for the same call: the bot replaces its own (restart_pc). */
  async _restart() {
    this._restarts += 1;
    const old = this.pc;
    this._stopPing();
    this._emit("restart", {});
    this._newPeer();
    this.everConnected = false;
    try {
      await this._negotiate(true);
    } catch (err) {
      this._end("connection_lost", err);
      return;
    } finally {
      old.close();
    }
    this._armConnectTimer();
  }

  _armConnectTimer() {
    clearTimeout(this._connectTimer);
    const pc = this.pc;
    this._connectTimer = setTimeout(() => {
      if (this.pc === pc && pc.connectionState !== "connected") this._lostPath();
    }, CONNECT_TIMEOUT_MS);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _end(reason, error = null) {
    // While Hang up waits for signaling, the bot leaving is the expected outcome, not news.
    if (this.closed || (this._hangingUp && reason !== "hangup")) return;
    this.closed = true;
    this._stopPing();
    clearTimeout(this._connectTimer);
    clearTimeout(this._graceTimer);
    clearTimeout(this._batchTimer);
    if (!this._told) {
      // Free the bot now rather than when it notices the peer is gone; keepalive lets the
      // request finish even when the page is closing.
      this.client.hangup(this.sessionId, { keepalive: true }).catch(() => {});
    }
    if (this.channel) this.channel.close();
    if (this.pc) this.pc.close();
    this._emit("ended", { reason, error });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

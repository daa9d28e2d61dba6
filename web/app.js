// The talk-to-agent page: Talk → microphone → POST /start → WebRTC call → transcript;
// Hang up; human error states with automatic retry when every agent is busy.

import { Call } from "./session.js";
import { Conversation } from "./conversation.js";
import { LevelMeter } from "./meter.js";
import { endProblem, microphoneProblem, serverProblem } from "./messages.js";
import { SignalingClient, pageOptions } from "./signaling.js";
import { Transcript } from "./transcript.js";
import { ACTIVE, View } from "./view.js";

/** Give up retrying a full server after this many attempts; the caller can press Talk. */
const MAX_RETRIES = 20;
/** A bot frame louder than this (meter scale 0..1, ≈ -48 dBFS) counts as the bot's first sound. */
const BOT_AUDIBLE = 0.2;

class App {
  constructor() {
    this.view = new View();
    const $ = (id) => document.getElementById(id);
    this.options = pageOptions();
    this.client = new SignalingClient(document.baseURI, { accessKey: this.options.accessKey });
    this.transcript = new Transcript($("transcript"), $("transcript-scroll"), $("transcript-empty"));
    this.conversation = new Conversation(this.transcript, () => this.render());
    this.phase = "idle";
    /** @type {Call|null} */
    this.call = null;
    this.stream = null;
    this.context = null;
    this.micMeter = null;
    this.botMeter = null;
    this.retries = 0;
    this._retryTimer = null;
    this._flow = 0; // bumped to cancel an attempt that is still awaiting something
    /** performance.now() instants of this call's milestones, for people and tests. */
    this.timings = {};

    this.view.el.talk.addEventListener("click", () => this.talk());
    this.view.el.hangup.addEventListener("click", () => this.hangUp());
    window.addEventListener("pagehide", () => this.call && this.call.abandon());
    if (!window.isSecureContext || !navigator.mediaDevices || !window.RTCPeerConnection) {
      this.view.showProblem({
        title: "This browser can't make calls here",
        detail: window.isSecureContext
          ? "It does not support WebRTC. Try a current Chrome, Firefox, Safari or Edge."
          : "The page must be opened over https:// (or from localhost) to use the microphone.",
      });
      this.view.el.talk.disabled = true;
    }
    this.setPhase("idle");
  }

  /** The Talk button: a fresh call. */
  async talk() {
    if (ACTIVE.has(this.phase)) return;
    this.retries = 0;
    this.transcript.clear();
    this.conversation.reset();
    this.view.setCallId(null);
    this.timings = { talk: performance.now() };
    // Created inside the click so autoplay rules let it run.
    if (!this.context) this.context = new AudioContext();
    this.context.resume().catch(() => {});
    this.view.el.audio.play().catch(() => {});
    await this.attempt();
  }

  /**
   * One attempt to get a call going; a full server schedules the next one. The microphone
   * stays open between attempts, so a browser that asks every time asks only once.
   */
  async attempt() {
    const flow = ++this._flow;
    const stale = () => flow !== this._flow;
    if (!this.stream) {
      this.setPhase("mic");
      let stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
      } catch (err) {
        if (!stale()) this.fail(microphoneProblem(err));
        return;
      }
      if (stale()) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      this.stream = stream;
      this.timings.mic = performance.now();
      this.micMeter = new LevelMeter(this.context, stream, (level) => {
        this.view.renderMic(level, true);
      });
    }
    if (this.phase !== "waiting") this.setPhase("starting");
    let call = null;
    try {
      // A session given in the fragment was started by the site's server (auth on).
      const { sessionId, iceServers } = this.options.sessionId
        ? await this.client.join(this.options.sessionId)
        : await this.client.start();
      call = new Call({
        client: this.client,
        sessionId,
        iceServers,
        stream: this.stream,
        relayOnly: this.options.relayOnly,
      });
      if (stale()) return call.abandon();
      this.call = call;
      this.watch(call);
      await call.connect();
      if (stale()) return;
      this.timings.answer = performance.now();
      this.view.clearNotice();
      this.view.setCallId(sessionId);
      if (this.phase === "starting" || this.phase === "waiting") this.setPhase("connecting");
    } catch (err) {
      if (stale()) return;
      if (call) {
        this.call = null;
        call.abandon(); // the session exists even though its offer failed: free it
      }
      const problem = serverProblem(err);
      if (problem.retry !== null && this.retries < MAX_RETRIES) {
        this.scheduleRetry(problem);
      } else {
        this.fail(problem);
      }
    }
  }

  /** Hang up (or cancel an attempt or a pending retry). */
  async hangUp() {
    this._flow += 1;
    this.cancelRetry();
    const call = this.call;
    if (call && !call.closed) {
      this.setPhase("ending");
      await call.hangup(); // ends through the "ended" event
      return;
    }
    this.call = null;
    this.releaseMedia();
    this.view.clearNotice();
    this.setPhase(this.timings.connected ? "ended" : "idle");
  }

  watch(call) {
    const mine = (handler) => (event) => {
      if (call === this.call) handler(event.detail);
    };
    call.addEventListener("state", mine(({ connection }) => {
      if (connection === "connected") {
        if (!this.timings.connected) this.timings.connected = performance.now();
        if (this.phase !== "ending") this.setPhase("connected");
      } else if (connection === "disconnected" && this.phase === "connected") {
        this.setPhase("reconnecting"); // the browser may recover on its own; Call restarts if not
      }
    }));
    call.addEventListener("restart", mine(() => this.setPhase("reconnecting")));
    call.addEventListener("open", mine(() => {
      if (!this.timings.channel) this.timings.channel = performance.now();
    }));
    call.addEventListener("track", mine(({ stream }) => this.playBot(stream)));
    call.addEventListener("message", mine((message) => {
      if (message.type === "bot-ready" && !this.timings.botReady) {
        this.timings.botReady = performance.now();
      }
      this.conversation.handle(message);
    }));
    call.addEventListener("ended", mine(({ reason }) => this.ended(reason)));
  }

  playBot(stream) {
    const audio = this.view.el.audio;
    audio.srcObject = stream;
    audio.play().catch((err) => console.warn("voicebots: cannot play the agent", err));
    if (this.botMeter) this.botMeter.stop();
    this.botMeter = new LevelMeter(this.context, stream, (level) => {
      if (level >= BOT_AUDIBLE && !this.timings.botAudio) this.timings.botAudio = performance.now();
      this.view.renderBotLevel(level);
    });
  }

  ended(reason) {
    this.call = null;
    this.releaseMedia();
    this.conversation.botSpeaking = false;
    this.conversation.userSpeaking = false;
    const problem = endProblem(reason);
    if (problem && !problem.info) {
      this.fail(problem);
      return;
    }
    this.setPhase("ended");
    if (problem) this.view.showProblem(problem, "info");
  }

  scheduleRetry(problem) {
    this.retries += 1;
    this.setPhase("waiting");
    this.view.showProblem(problem, "warn");
    let remaining = problem.retry;
    const tick = () => {
      if (remaining <= 0) {
        this._retryTimer = null;
        this.view.setCountdown("Trying again now…");
        this.attempt();
        return;
      }
      this.view.setCountdown(`Trying again in ${remaining} s…`);
      remaining -= 1;
      this._retryTimer = setTimeout(tick, 1000);
    };
    tick();
  }

  cancelRetry() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this.view.setCountdown(null);
  }

  fail(problem) {
    this.releaseMedia();
    this.setPhase("error", problem.title);
    this.view.showProblem(problem, "error");
  }

  releaseMedia() {
    if (this.micMeter) this.micMeter.stop();
    if (this.botMeter) this.botMeter.stop();
    this.micMeter = this.botMeter = null;
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.view.renderBotLevel(0);
    this.view.renderMic(0, false);
  }

  setPhase(phase, statusText = null) {
    this.phase = phase;
    this.view.setPhase(phase, statusText);
    this.render();
  }

  render() {
    this.view.renderConversation(this.conversation, this.phase);
    const error = this.conversation.lastError;
    if (error && error.fatal && this.phase === "connected") {
      this.view.showProblem({ title: "The agent reported an error", detail: error.message });
    }
  }
}

const app = new App();

// For people poking at a call in devtools, and for the end-to-end tests.
window.voicebots = {
  app,
  get pc() {
    return app.call ? app.call.pc : null;
  },
  get phase() {
    return app.phase;
  },
  get sessionId() {
    return app.call ? app.call.sessionId : null;
  },
  get timings() {
    const t0 = app.timings.talk;
    return Object.fromEntries(Object.entries(app.timings).map(([k, v]) => [k, v - t0]));
  },
  get micLevel() {
    return app.micMeter ? app.micMeter.level : 0;
  },
  transcript: () => app.transcript.lines(),
  latencies: () => [...app.conversation.latencies],
  /** The services' latest time to first byte, in ms, from the bot's RTVI metrics. */
  ttfb: () => ({ ...app.conversation.ttfb }),
};

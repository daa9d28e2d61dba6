// The page's DOM: status, agent orb, microphone meter, buttons, notices, statistics.
// It renders what App and Conversation decide; it owns no call state.

const STATUS = {
  idle: ["Ready", "idle"],
  mic: ["Waiting for the microphone…", "pending"],
  starting: ["Finding an agent…", "pending"],
  connecting: ["Connecting…", "pending"],
  connected: ["Connected", "live"],
  reconnecting: ["Reconnecting…", "pending"],
  waiting: ["All agents are busy", "warn"],
  ending: ["Hanging up…", "pending"],
  ended: ["Call ended", "idle"],
  error: ["Something went wrong", "error"],
};

/** What the line under the orb says outside a connected call. */
const AGENT_STATE = {
  mic: "Allow the microphone to start",
  starting: "Finding an agent…",
  connecting: "Connecting the audio…",
  reconnecting: "Reconnecting the audio…",
  waiting: "Waiting for a free agent",
  ending: "Hanging up…",
  ended: "Call ended",
};

/** Phases in which a call (or the attempt to make one) is under way. */
export const ACTIVE = new Set([
  "mic",
  "starting",
  "connecting",
  "connected",
  "reconnecting",
  "waiting",
  "ending",
]);

const $ = (id) => document.getElementById(id);

export class View {
  constructor() {
    this.el = {
      status: $("status"),
      statusText: $("status-text"),
      orb: $("orb"),
      agentState: $("agent-state"),
      meter: $("mic-meter"),
      meterFill: $("mic-fill"),
      talk: $("talk"),
      talkLabel: $("talk-label"),
      hangup: $("hangup"),
      hangupLabel: $("hangup-label"),
      notice: $("notice"),
      noticeTitle: $("notice-title"),
      noticeDetail: $("notice-detail"),
      countdown: $("notice-countdown"),
      latencyLast: $("latency-last"),
      latencyAvg: $("latency-avg"),
      turns: $("turns"),
      callId: $("call-id"),
      audio: $("bot-audio"),
    };
    this._meterStep = -1;
  }

  /** Status pill, buttons and focus for a phase; `statusText` overrides the pill's words. */
  setPhase(phase, statusText = null) {
    const [text, tone] = STATUS[phase];
    const el = this.el;
    el.statusText.textContent = statusText || text;
    el.status.dataset.tone = tone;
    document.body.dataset.phase = phase;
    const active = ACTIVE.has(phase);
    const hadFocus = document.activeElement;
    el.talk.hidden = active;
    el.hangup.hidden = !active;
    // Not `disabled`: a disabled button drops keyboard focus; a second press is a no-op anyway.
    el.hangup.setAttribute("aria-disabled", String(phase === "ending"));
    el.hangupLabel.textContent = phase === "waiting" || phase === "mic" ? "Cancel" : "Hang up";
    el.talkLabel.textContent = phase === "ended" || phase === "error" ? "Talk again" : "Talk";
    // Keep keyboard focus on the control that replaced the one that was pressed.
    if (hadFocus === el.talk && active) el.hangup.focus();
    if (hadFocus === el.hangup && !active) el.talk.focus();
  }

  /** The microphone meter; `level` in [0, 1], `live` false when there is no microphone. */
  renderMic(level, live) {
    this.el.meterFill.style.transform = `scaleX(${level.toFixed(3)})`;
    // aria-valuenow moves in steps of 10 so screen readers are not flooded.
    const step = live ? Math.round(level * 10) * 10 : -1;
    if (step !== this._meterStep) {
      this._meterStep = step;
      this.el.meter.setAttribute("aria-valuenow", String(Math.max(0, step)));
      this.el.meter.setAttribute("aria-valuetext", live ? `${step}%` : "off");
    }
  }

  /** The orb follows the bot's voice. */
  renderBotLevel(level) {
    this.el.orb.style.setProperty("--level", level.toFixed(3));
  }

  /** Orb, agent state line and statistics. */
  renderConversation(conversation, phase) {
    const c = conversation;
    const live = phase === "connected";
    this.el.orb.dataset.active = String(live);
    this.el.orb.dataset.speaking = String(live && c.botSpeaking);
    let state;
    if (!live) state = AGENT_STATE[phase] || "Not connected";
    else if (c.botSpeaking) state = "Agent is speaking";
    else if (c.userSpeaking) state = "Listening to you…";
    else if (c.botReady) state = "Agent is listening";
    else state = "Agent is getting ready…";
    if (this.el.agentState.textContent !== state) this.el.agentState.textContent = state;
    const ms = (value) => (value === null ? "–" : `${Math.round(value)} ms`);
    this.el.latencyLast.textContent = ms(c.lastLatency);
    this.el.latencyAvg.textContent = ms(c.averageLatency);
    this.el.turns.textContent = String(c.latencies.length);
  }

  /** The notice box (role="alert"); tone is "error", "warn" or "info". */
  showProblem({ title, detail }, tone = "error") {
    this.el.notice.dataset.tone = tone;
    this.el.noticeTitle.textContent = title;
    this.el.noticeDetail.textContent = detail || "";
    this.el.notice.hidden = false;
  }

  clearNotice() {
    this.el.notice.hidden = true;
    this.setCountdown(null);
  }

  /** The retry countdown under a notice; null hides it. */
  setCountdown(text) {
    this.el.countdown.hidden = text === null;
    if (text !== null) this.el.countdown.textContent = text;
  }

  setCallId(sessionId) {
    this.el.callId.textContent = sessionId ? `Call ${sessionId.slice(0, 8)}` : "";
  }
}

// What the bot's RTVI messages mean for the page: the transcript of both sides, who is
// speaking, and each turn's response time (user-stopped-speaking → bot-started-speaking).
//
// pipecat sends the same words more than once: user-transcription and (protocol ≥ 2.2)
// user-input carry one user turn with the same timestamp; bot-transcription precedes
// bot-output, which comes once when a sentence is queued and again when it has been spoken.
// Segments are keyed so the repeats update a line; bot-transcription is only used from a
// server that never sends bot-output.

export class Conversation {
  /**
   * @param {import("./transcript.js").Transcript} transcript
   * @param {(change: {kind: string}) => void} onChange called after each state change
   */
  constructor(transcript, onChange = () => {}) {
    this.transcript = transcript;
    this.onChange = onChange;
    this.reset();
  }

  reset() {
    this.botReady = false;
    this.botSpeaking = false;
    this.userSpeaking = false;
    /** Response times in ms, oldest first. */
    this.latencies = [];
    /** Latest time-to-first-byte per service kind ("stt", "llm", "tts"), in ms. */
    this.ttfb = {};
    this.lastError = null;
    this._stoppedAt = null;
    this._pendingLatency = null;
    this._usesBotOutput = false;
    this._legacy = 0;
    this._untitled = 0;
  }

  get lastLatency() {
    return this.latencies.length ? this.latencies[this.latencies.length - 1] : null;
  }

  get averageLatency() {
    if (!this.latencies.length) return null;
    return this.latencies.reduce((a, b) => a + b, 0) / this.latencies.length;
  }

  /** Apply one RTVI message (`{type, data}`) at `now` (ms, performance.now()). */
  handle({ type, data }, now = performance.now()) {
    const d = data && typeof data === "object" ? data : {};
    switch (type) {
      case "bot-ready":
        this.botReady = true;
        break;
      case "user-started-speaking":
        this.userSpeaking = true;
        this._stoppedAt = null;
        this._pendingLatency = null;
        this.transcript.closeTurn();
        break;
      case "user-stopped-speaking":
        this.userSpeaking = false;
        this._stoppedAt = now;
        break;
      case "bot-started-speaking":
        this.botSpeaking = true;
        if (this._stoppedAt !== null) this._recordLatency(now - this._stoppedAt);
        this._stoppedAt = null;
        break;
      case "bot-stopped-speaking":
      case "bot-interrupted":
        this.botSpeaking = false;
        break;
      case "user-transcription":
      case "user-input":
        this._userText(d);
        break;
      case "bot-output":
        this._botOutput(d);
        break;
      case "bot-transcription":
        if (!this._usesBotOutput) this._botText(`legacy:${this._legacy++}`, d.text);
        break;
      case "metrics":
        this._metrics(d);
        break;
      case "error":
      case "error-response":
        this.lastError = { message: String(d.message || d.error || "error"), fatal: !!d.fatal };
        break;
      default:
        return;
    }
    this.onChange({ kind: type });
  }

  _userText(d) {
    if (typeof d.text !== "string") return;
    if (d.final === false) {
      this.transcript.upsert("user", "user:interim", d.text, { interim: true });
      return;
    }
    this.transcript.remove("user:interim");
    this.transcript.upsert("user", `user:${d.timestamp || d.text}`, d.text);
  }

  _botOutput(d) {
    if (typeof d.text !== "string") return;
    if (!this._usesBotOutput) {
      this._usesBotOutput = true;
      this.transcript.removeWhere("bot:legacy:");
    }
    const id = d.segment_id ?? `text:${d.text}`;
    this._botText(`seg:${id}`, d.text);
  }

  _botText(key, text) {
    const entry = this.transcript.upsert("assistant", `bot:${key}`, text);
    if (entry && this._pendingLatency !== null && entry.latencyMs === null) {
      this.transcript.setLatency(entry, this._pendingLatency);
      this._pendingLatency = null;
    }
  }

  _recordLatency(ms) {
    this.latencies.push(ms);
    // The reply's words usually arrive just after bot-started-speaking; label that turn.
    const last = this.transcript.lastOf("assistant");
    if (last && last.latencyMs === null && this._stoppedAt !== null && last.createdAt >= this._stoppedAt) {
      this.transcript.setLatency(last, ms);
    } else {
      this._pendingLatency = ms;
    }
  }

  _metrics(d) {
    for (const item of Array.isArray(d.ttfb) ? d.ttfb : []) {
      const name = String(item.processor || "").toLowerCase();
      const kind = ["stt", "llm", "tts"].find((k) => name.includes(k));
      if (kind && typeof item.value === "number" && item.value > 0) {
        this.ttfb[kind] = item.value * 1000;
      }
    }
  }
}

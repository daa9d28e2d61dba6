// The running transcript: turns of "user" and "assistant", each made of keyed segments so a
// message repeated by the bot (a bot-output segment first "new", then "completed"; the same
// user turn as both user-transcription and user-input) updates a line instead of adding one.

const NEAR_BOTTOM_PX = 48;
const LABELS = { user: "You", assistant: "Agent" };

export class Transcript {
  /**
   * @param {HTMLOListElement} list
   * @param {HTMLElement} scroller the fixed-height element that scrolls
   * @param {HTMLElement|null} empty shown while there are no lines
   */
  constructor(list, scroller, empty = null) {
    this.list = list;
    this.scroller = scroller;
    this.empty = empty;
    this.entries = [];
    this._byKey = new Map();
  }

  /** Add or update a segment of the current turn of `role` (a new turn if the other spoke). */
  upsert(role, key, text, { interim = false } = {}) {
    const clean = String(text || "").trim();
    const known = this._byKey.get(key);
    if (known) {
      if (!clean) return this._remove(key);
      known.segment.text = clean;
      known.segment.interim = interim;
      this._render(known.entry);
      return known.entry;
    }
    if (!clean) return null;
    let entry = this.entries[this.entries.length - 1];
    if (!entry || entry.role !== role || entry.closed) entry = this._newEntry(role);
    const segment = { key, text: clean, interim };
    entry.segments.push(segment);
    this._byKey.set(key, { entry, segment });
    this._render(entry);
    return entry;
  }

  /** Drop a segment (e.g. an interim transcription replaced by the final one). */
  remove(key) {
    this._remove(key);
  }

  /** Drop every segment whose key starts with `prefix`. */
  removeWhere(prefix) {
    for (const key of [...this._byKey.keys()]) if (key.startsWith(prefix)) this._remove(key);
  }

  /** The next line of `role` starts a new turn even if `role` spoke last. */
  closeTurn() {
    const last = this.entries[this.entries.length - 1];
    if (last) last.closed = true;
  }

  /** The last turn, if it is `role`'s. */
  lastOf(role) {
    const last = this.entries[this.entries.length - 1];
    return last && last.role === role ? last : null;
  }

  /** Show a response time on a turn. */
  setLatency(entry, ms) {
    entry.latencyMs = ms;
    entry.latencyEl.textContent = `${Math.round(ms)} ms`;
    entry.latencyEl.hidden = false;
    entry.latencyEl.title = "Response time: from the end of your turn to the agent's first word";
  }

  /** Plain lines, oldest first: `[{role, text}]`. */
  lines() {
    return this.entries
      .map((e) => ({ role: e.role, text: this._text(e, false) }))
      .filter((line) => line.text);
  }

  clear() {
    this.entries = [];
    this._byKey.clear();
    this.list.replaceChildren();
    if (this.empty) this.empty.hidden = false;
  }

  _newEntry(role) {
    const item = document.createElement("li");
    item.className = `line line-${role}`;
    const meta = document.createElement("div");
    meta.className = "line-meta";
    const who = document.createElement("span");
    who.className = "line-who";
    who.textContent = LABELS[role] || role;
    const latency = document.createElement("span");
    latency.className = "line-latency";
    latency.hidden = true;
    meta.append(who, latency);
    const text = document.createElement("p");
    text.className = "line-text";
    item.append(meta, text);
    const entry = {
      role,
      segments: [],
      closed: false,
      createdAt: performance.now(),
      latencyMs: null,
      shown: null,
      el: item,
      textEl: text,
      latencyEl: latency,
    };
    const stick = this._nearBottom();
    this.entries.push(entry);
    this.list.append(item);
    if (this.empty) this.empty.hidden = true;
    if (stick) this._scrollToEnd();
    return entry;
  }

  _remove(key) {
    const known = this._byKey.get(key);
    if (!known) return null;
    this._byKey.delete(key);
    const { entry, segment } = known;
    entry.segments.splice(entry.segments.indexOf(segment), 1);
    if (entry.segments.length === 0) {
      entry.el.remove();
      this.entries.splice(this.entries.indexOf(entry), 1);
      if (this.empty && this.entries.length === 0) this.empty.hidden = false;
    } else {
      this._render(entry);
    }
    return null;
  }

  _text(entry, withInterim) {
    return entry.segments
      .filter((s) => withInterim || !s.interim)
      .map((s) => s.text)
      .join(" ");
  }

  _render(entry) {
    const final = this._text(entry, false);
    const interim = entry.segments.filter((s) => s.interim).map((s) => s.text).join(" ");
    // Repeats of the same words (bot-output "new", then "completed") leave the DOM alone,
    // so the live region does not read them twice.
    const shown = `${final}\u0000${interim}`;
    if (entry.shown === shown) return;
    entry.shown = shown;
    const stick = this._nearBottom();
    entry.textEl.replaceChildren(document.createTextNode(final));
    if (interim) {
      const span = document.createElement("span");
      span.className = "line-interim";
      span.textContent = (final ? " " : "") + interim;
      entry.textEl.append(span);
    }
    if (stick) this._scrollToEnd();
  }

  _nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= NEAR_BOTTOM_PX;
  }

  _scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

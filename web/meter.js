// Audio levels of a MediaStream (the microphone, the bot), sampled once per animation frame.

/** Levels at or below this many dBFS read as 0, 0 dBFS reads as 1. */
const FLOOR_DB = -60;
/** How fast the displayed level falls back (per frame), so the bar does not flicker. */
const DECAY = 0.85;

/** A level in [0, 1] from the RMS of float samples, on a dB scale. */
export function levelFromSamples(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i += 1) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  if (rms <= 0) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db - FLOOR_DB) / -FLOOR_DB));
}

export class LevelMeter {
  /**
   * @param {AudioContext} context
   * @param {MediaStream} stream
   * @param {(level: number) => void} onLevel called each frame with a smoothed level in [0, 1]
   */
  constructor(context, stream, onLevel) {
    this.context = context;
    this.onLevel = onLevel;
    this.level = 0;
    /** Peak (unsmoothed) level of the last frame, for "is there sound" checks. */
    this.peak = 0;
    this._source = context.createMediaStreamSource(stream);
    this._analyser = context.createAnalyser();
    this._analyser.fftSize = 1024;
    this._buffer = new Float32Array(this._analyser.fftSize);
    this._source.connect(this._analyser);
    this._frame = 0;
    this._running = true;
    this._tick = this._tick.bind(this);
    this._frame = requestAnimationFrame(this._tick);
  }

  _tick() {
    if (!this._running) return;
    this._analyser.getFloatTimeDomainData(this._buffer);
    this.peak = levelFromSamples(this._buffer);
    this.level = Math.max(this.peak, this.level * DECAY);
    this.onLevel(this.level);
    this._frame = requestAnimationFrame(this._tick);
  }

  /** Stop sampling and detach from the audio graph. Safe to call twice. */
  stop() {
    if (!this._running) return;
    this._running = false;
    cancelAnimationFrame(this._frame);
    this._source.disconnect();
    this._analyser.disconnect();
    this.onLevel(0);
  }
}

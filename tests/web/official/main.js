// The smallest page a pipecat user would write with the official packages, pointed at
// voicebots' signaling: PipecatClient + SmallWebRTCTransport, startBotAndConnect("/start").
// Everything the client reports is recorded on window.officialClient for the test to read.

import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport } from "@pipecat-ai/small-webrtc-transport";

import { MicMediaManager } from "./mic_media_manager.js";

const events = [];
const stateEl = document.getElementById("state");
const logEl = document.getElementById("log");

function record(type, data) {
  events.push({ type, data: data === undefined ? null : JSON.parse(JSON.stringify(data)) });
  const item = document.createElement("li");
  item.textContent = `${type} ${data === undefined ? "" : JSON.stringify(data)}`;
  logEl.append(item);
}

const client = new PipecatClient({
  transport: new SmallWebRTCTransport({ mediaManager: new MicMediaManager() }),
  enableMic: true,
  enableCam: false,
  callbacks: {
    onTransportStateChanged: (state) => {
      stateEl.textContent = state;
      record("transport-state", state);
    },
    onBotReady: (data) => record("bot-ready", data),
    onUserTranscript: (data) => record("user-transcript", data),
    onBotTranscript: (data) => record("bot-transcript", data),
    onBotOutput: (data) => record("bot-output", data),
    onBotStartedSpeaking: () => record("bot-started-speaking"),
    onBotStoppedSpeaking: () => record("bot-stopped-speaking"),
    onTrackStarted: (track, participant) =>
      record("track-started", { kind: track.kind, local: Boolean(participant && participant.local) }),
    onError: (message) => record("error", message),
    onDisconnected: () => record("disconnected"),
  },
});

// The remote audio must be played somewhere for the call to be a real one.
client.on("trackStarted", (track, participant) => {
  if (track.kind !== "audio" || (participant && participant.local)) return;
  const audio = document.createElement("audio");
  audio.autoplay = true;
  audio.srcObject = new MediaStream([track]);
  document.body.append(audio);
});

window.officialClient = {
  events,
  async start() {
    try {
      await client.startBotAndConnect({ endpoint: "/start" });
      return "connected";
    } catch (err) {
      record("start-failed", { message: String(err && err.message ? err.message : err) });
      return `failed: ${err}`;
    }
  },
  async stop() {
    await client.disconnect();
  },
};
stateEl.textContent = "ready";

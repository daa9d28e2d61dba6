// The messages on the data channel: RTVI (label "rtvi-ai") and the SmallWebRTC transport's own
// "signalling" envelope, as pipecat 1.x speaks them.

/** The RTVI protocol version this page speaks (pipecat 1.14 serves 2.2.0). */
export const RTVI_VERSION = "2.2.0";
export const RTVI_LABEL = "rtvi-ai";
/** The data channel pipecat's SmallWebRTC transport expects the client to open. */
export const CHANNEL_LABEL = "chat";
/** pipecat drops a client whose last "ping" is older than 3 s; the official client pings each 1 s. */
export const PING_INTERVAL_MS = 1000;
/** The transceiver order both peers agree on: audio first. */
export const AUDIO_RECEIVER_INDEX = 0;

const LIBRARY = { library: "voicebots-web", library_version: "0.1.0" };

function messageId() {
  return crypto.randomUUID ? crypto.randomUUID().slice(0, 8) : Math.random().toString(16).slice(2, 10);
}

/** `client-ready`: tells the bot the client is listening; it answers with `bot-ready`. */
export function clientReady() {
  return {
    id: messageId(),
    label: RTVI_LABEL,
    type: "client-ready",
    data: {
      version: RTVI_VERSION,
      about: {
        ...LIBRARY,
        platform: "web",
        platform_details: { user_agent: navigator.userAgent },
      },
    },
  };
}

/** The transport's trackStatus: whether our microphone (receiver 0 on the bot) is on. */
export function trackStatus(enabled, receiverIndex = AUDIO_RECEIVER_INDEX) {
  return {
    type: "signalling",
    message: { type: "trackStatus", receiver_index: receiverIndex, enabled },
  };
}

/** The keep-alive text the bot watches to tell a live client from a vanished one. */
export function ping(now = Date.now()) {
  return `ping: ${now}`;
}

/**
 * One data channel message, classified.
 * @returns {{kind: "signalling", type: string, message: object}
 *         | {kind: "rtvi", type: string, data: any, id?: string}
 *         | null} null for anything that is neither
 */
export function parseMessage(raw) {
  if (typeof raw !== "string") return null;
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!value || typeof value !== "object") return null;
  if (value.type === "signalling" && value.message && typeof value.message === "object") {
    return { kind: "signalling", type: String(value.message.type || ""), message: value.message };
  }
  if (value.label === RTVI_LABEL && typeof value.type === "string") {
    return { kind: "rtvi", type: value.type, data: value.data, id: value.id };
  }
  return null;
}

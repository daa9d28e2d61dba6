// What the page says when something goes wrong, in words a caller understands.
// Each function returns {title, detail, retry}: `retry` is seconds until an automatic retry,
// or null when the caller has to act first.

const DEFAULT_RETRY_S = 2;
const MAX_RETRY_S = 60;

function retryIn(err) {
  const seconds = err.retryAfter ?? DEFAULT_RETRY_S;
  return Math.min(MAX_RETRY_S, Math.max(1, Math.ceil(seconds)));
}

/** A getUserMedia failure. */
export function microphoneProblem(err) {
  const name = (err && err.name) || "";
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return {
      title: "Microphone access is blocked",
      detail:
        "Allow this site to use your microphone (look for the microphone or lock icon in the " +
        "address bar), then press Talk again.",
      retry: null,
    };
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return {
      title: "No microphone found",
      detail: "Connect a microphone or headset, then press Talk again.",
      retry: null,
    };
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return {
      title: "Your microphone is busy",
      detail: "Another app may be using it. Close that app, then press Talk again.",
      retry: null,
    };
  }
  return {
    title: "The microphone could not be started",
    detail: String((err && err.message) || err || "Unknown error"),
    retry: null,
  };
}

/** An ApiError from signaling. */
export function serverProblem(err) {
  const status = err.status ?? 0;
  if (status === 0) {
    if (err.code === "timeout") {
      return {
        title: "The server is not responding",
        detail: "It may be overloaded or restarting. Press Talk to try again in a moment.",
        retry: null,
      };
    }
    return {
      title: "Can't reach the server",
      detail: "Check your internet connection, then press Talk to try again.",
      retry: null,
    };
  }
  if (status === 401) {
    return {
      title: "You're not authorised to talk to this agent",
      detail:
        "This agent needs an access key. Open the full link you were given (it ends in " +
        "#key=…) or ask whoever runs it for one.",
      retry: null,
    };
  }
  if (status === 403) {
    return {
      title: "Access denied",
      detail: "Your access key is not allowed to talk to this agent.",
      retry: null,
    };
  }
  if (status === 503 && err.code === "no_capacity") {
    return {
      title: "All agents are busy",
      detail: "Every agent is on a call right now. We'll try again automatically.",
      retry: retryIn(err),
    };
  }
  if (status === 503 && err.code === "draining") {
    return {
      title: "The service is restarting",
      detail: "It will be back in a moment. We'll try again automatically.",
      retry: retryIn(err),
    };
  }
  if (status === 503 || status === 429) {
    return {
      title: "The service is temporarily unavailable",
      detail: "We'll try again automatically.",
      retry: retryIn(err),
    };
  }
  if (status >= 500) {
    return {
      title: "Something went wrong on the server",
      detail: err.message ? `The server said: ${err.message}` : `HTTP ${status}`,
      retry: null,
    };
  }
  return {
    title: "The call could not be started",
    detail: err.message ? `The server said: ${err.message}` : `HTTP ${status}`,
    retry: null,
  };
}

/** Why a connected (or connecting) call ended, when it was not the caller's doing. */
export function endProblem(reason) {
  switch (reason) {
    case "ice_failed":
      return {
        title: "Couldn't connect the audio",
        detail:
          "The call was set up but no network path to the agent could be found. A firewall, " +
          "VPN or a network that blocks UDP can cause this.",
        retry: null,
      };
    case "connection_lost":
      return {
        title: "The connection dropped",
        detail: "The network path to the agent was lost. Press Talk to start a new call.",
        retry: null,
      };
    case "peer_left":
      return {
        title: "The agent ended the call",
        detail: "Press Talk to start a new call.",
        retry: null,
        info: true,
      };
    default:
      return null;
  }
}

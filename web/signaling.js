// The public HTTP contract of voicebots signaling (README, "HTTP API"), browser side.
//
// Paths are resolved against the page's own URL, so the page keeps working when it is served
// under a path prefix behind a proxy. Every failure becomes an ApiError: `status` 0 means the
// server could not be reached at all.

const REQUEST_TIMEOUT_MS = 15000;

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, or 0 when there was no reply
   * @param {string} code the `error.code` of the JSON body (or a local one)
   * @param {string} message
   * @param {number|null} retryAfter seconds, from `Retry-After`
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Seconds from a Retry-After header: delta-seconds or an HTTP date; null if absent. */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - now) / 1000);
}

/**
 * Options given in the page's fragment, which never reaches a server log:
 * `#key=…` an access key sent as a bearer token; `#session=…&token=…` a session the site's
 * server started with its API key, and that session's token; `#relay` TURN only, to check a
 * TURN setup.
 */
export function pageOptions(location = window.location) {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const relay = params.get("relay");
  return {
    accessKey: params.get("key") || params.get("token") || null,
    sessionId: params.get("session") || null,
    relayOnly: relay !== null && relay !== "0" && relay !== "false",
  };
}

export class SignalingClient {
  /**
   * @param {string} base URL the API paths are relative to (the page's URL by default)
   * @param {{accessKey?: string|null}} options
   */
  constructor(base = document.baseURI, { accessKey = null } = {}) {
    this.base = base;
    this.headers = accessKey ? { Authorization: `Bearer ${accessKey}` } : {};
  }

  /** `POST /start` → `{sessionId, iceServers}`. */
  async start(body = {}) {
    const reply = await this.request("POST", "start", { body });
    if (!reply || typeof reply.sessionId !== "string" || !reply.sessionId) {
      throw new ApiError(0, "bad_reply", "The server's reply to /start had no sessionId.");
    }
    const servers = reply.iceConfig && Array.isArray(reply.iceConfig.iceServers)
      ? reply.iceConfig.iceServers
      : [];
    return { sessionId: reply.sessionId, iceServers: servers };
  }

  /** A session the site's server started: `GET /api/sessions/{id}` → `{sessionId, iceServers}`. */
  async join(sessionId) {
    const reply = await this.request("GET", `api/sessions/${encodeURIComponent(sessionId)}`);
    const servers = reply && reply.iceConfig && Array.isArray(reply.iceConfig.iceServers)
      ? reply.iceConfig.iceServers
      : [];
    return { sessionId, iceServers: servers };
  }

  /** `POST /sessions/{id}/api/offer` → `{sdp, type: "answer", pc_id}`. */
  async offer(sessionId, { sdp, pcId = null, restartPc = false }) {
    const reply = await this.request("POST", `sessions/${encodeURIComponent(sessionId)}/api/offer`, {
      sdp,
      type: "offer",
      pc_id: pcId,
      restart_pc: restartPc,
    });
    if (!reply || typeof reply.sdp !== "string" || typeof reply.pc_id !== "string") {
      throw new ApiError(0, "bad_reply", "The server's answer had no SDP or pc_id.");
    }
    return reply;
  }

  /** Trickle ICE: `PATCH /sessions/{id}/api/offer`. */
  async addCandidates(sessionId, pcId, candidates) {
    await this.request("PATCH", `sessions/${encodeURIComponent(sessionId)}/api/offer`, {
      pc_id: pcId,
      candidates,
    });
  }

  /** `DELETE /api/sessions/{id}`. `keepalive` lets it outlive a closing page. */
  async hangup(sessionId, { keepalive = false, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    return this.request("DELETE", `api/sessions/${encodeURIComponent(sessionId)}`, undefined, {
      keepalive,
      timeoutMs,
    });
  }

  async request(method, path, body, { keepalive = false, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    const headers = { ...this.headers };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(new URL(path, this.base), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        keepalive,
        cache: "no-store",
        signal: keepalive ? undefined : AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const timedOut = err && err.name === "TimeoutError";
      throw new ApiError(
        0,
        timedOut ? "timeout" : "unreachable",
        timedOut ? `${method} /${path} timed out` : `${method} /${path}: ${err}`,
      );
    }
    let data = null;
    const text = await response.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && typeof data.error === "object" && data.error ? data.error : {};
      throw new ApiError(
        response.status,
        String(error.code || `http_${response.status}`),
        String(error.message || response.statusText || text.slice(0, 200)),
        parseRetryAfter(response.headers.get("Retry-After")),
      );
    }
    return data;
  }
}

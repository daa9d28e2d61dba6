"""Redis over TLS with a password, and secrets kept out of every log.

A throwaway CA signs a certificate for a private ``redis-server`` that speaks only TLS and
wants a password; ``REDIS_URL=rediss://:<password>@…?ssl_ca_certs=…`` is all the spawner,
signaling and the rq worker are given. A real call goes through with every secret setting in
use — API key, metrics token, TURN secret, webhook secret, the Redis password — and logging at
DEBUG; then none of those values may appear in any process's output or in the stored record
(which carries the bot's log lines).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from rq import Queue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks.caller import CallOptions, run_call
from benchmarks.fakes.server import serve_asgi
from benchmarks.harness import Redis, free_port, run_system, run_worker_burst, wait_until
from common.record import QUEUE_NAME
from signaling.config import SecurityConfig
from spawner.webhook import SIGNATURE_HEADER
from tests import FIXTURES

API_KEY = "api-key-8d41c0b7e29f6a35"
METRICS_TOKEN = "metrics-token-1f9b3e7d05c2a864"
TURN_SECRET = "turn-secret-62ad0e9c4b7f1358"
WEBHOOK_SECRET = "webhook-secret-3c7a9e1d5f0b2846"
REDIS_PASSWORD = "redis-password-95e2c7a1d3f4b608"
SECRETS = {
    "API key": API_KEY,
    "metrics token": METRICS_TOKEN,
    "token secret": SecurityConfig.from_env({"VOICEBOTS_API_KEYS": API_KEY}).token_secret.hex(),
    "TURN secret": TURN_SECRET,
    "webhook secret": WEBHOOK_SECRET,
    "Redis password": REDIS_PASSWORD,
}


@dataclass
class TlsRedis(Redis):
    """A redis-server reachable only over TLS, with a password."""

    ca: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"


def _openssl(command: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *command.split()], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def _make_certificates(directory: Path) -> None:
    """A CA, and a certificate it signs for 127.0.0.1 (so the hostname check holds)."""
    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    _openssl(f"req -x509 {key} -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca", directory)
    _openssl(f"req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1", directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt "
        "-days 1 -extfile san.ext",
        directory,
    )


@contextmanager
def run_tls_redis() -> Iterator[TlsRedis]:
    """A private redis-server that speaks only TLS and wants REDIS_PASSWORD."""
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if server is None or openssl is None:
        raise RuntimeError("needs redis-server and openssl (apt-get install redis-server openssl)")
    directory = Path(tempfile.mkdtemp(prefix="voicebots-tls-"))
    _make_certificates(directory)
    port = free_port()
    # A config file, so the password is not on a command line for `ps` to show.
    config = directory / "redis.conf"
    config.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\n"
        f"tls-cert-file {directory / 'server.crt'}\ntls-key-file {directory / 'server.key'}\n"
        f"tls-ca-cert-file {directory / 'ca.crt'}\ntls-auth-clients no\n"
        f'requirepass {REDIS_PASSWORD}\nsave ""\nappendonly no\n'
    )
    process = subprocess.Popen(
        [server, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    instance = TlsRedis(port, process, ca=directory / "ca.crt")
    try:
        wait_until(lambda: instance.client().ping(), 10, "redis-server (TLS)", process)
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Hooks:
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@asynccontextmanager
async def run_webhook_receiver() -> AsyncIterator[tuple[str, Hooks]]:
    hooks = Hooks()

    async def hook(request: Request) -> Response:
        hooks.received.append((dict(request.headers), await request.body()))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_asgi(app) as (host, port):
        yield f"http://{host}:{port}/hook", hooks


def test_the_tls_redis_wants_tls_and_the_password() -> None:
    with run_tls_redis() as store:
        plain = redis.Redis(host="127.0.0.1", port=store.port, socket_timeout=2)
        no_password = redis.Redis.from_url(
            store.url.replace(f":{REDIS_PASSWORD}@", ""), socket_timeout=2
        )
        for client in (plain, no_password):
            try:
                client.ping()
            except redis.RedisError:
                pass
            else:
                raise AssertionError("the test Redis let in a client without TLS or password")
            finally:
                client.close()


async def test_a_call_through_tls_redis_leaves_no_secret_in_any_log() -> None:
    closed_turn = free_port()  # nothing listens: TURN over TCP fails at once, calls go direct
    with run_tls_redis() as store:
        async with run_webhook_receiver() as (hook_url, hooks):
            env = {
                "VOICEBOTS_API_KEYS": API_KEY,
                "VOICEBOTS_METRICS_TOKEN": METRICS_TOKEN,
                "VOICEBOTS_ICE_SERVERS": f"turn:127.0.0.1:{closed_turn}?transport=tcp",
                "VOICEBOTS_TURN_SECRET": TURN_SECRET,
                "VOICEBOTS_WEBHOOK_URL": hook_url,
                "VOICEBOTS_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "VOICEBOTS_LOG_LEVEL": "DEBUG",
            }
            with run_system(store, env, min_idle=1, max_bots=2) as system:
                headers = {"Authorization": f"Bearer {API_KEY}"}
                options = CallOptions(
                    url=system.url, wav=FIXTURES / "hello.wav", headers=headers, max_seconds=20
                )
                result = await run_call(options)
                token = await asyncio.to_thread(_use_a_session_token, system.url)
                queued = Queue(QUEUE_NAME, connection=store.client()).count
                worker = await asyncio.to_thread(run_worker_burst, system.env)
                logs = {name: system.log(name) for name in ("spawner", "signaling")}
            logs["worker"] = worker.stdout + worker.stderr
            record = store.record(result.session_id)

    assert worker.returncode == 0, logs["worker"][-3000:]
    assert record["status"] == "completed", record
    assert {"user", "assistant"} <= {line["role"] for line in json.loads(record["transcript"])}
    assert queued == 1 and record["summary"]
    assert record["webhook_status"] == "delivered"
    (headers_seen, body) = hooks.received[0]
    assert headers_seen[SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert json.loads(body)["session_id"] == result.session_id

    everything = {**logs, "record": json.dumps(record), "webhook": body.decode()}
    for where, text in everything.items():
        assert text or where == "worker", f"no {where} output to check"
        for what, secret in {**SECRETS, "session token": token}.items():
            assert secret not in text, f"the {what} appears in the {where}"
        assert "Traceback" not in text, f"a traceback in the {where}:\n{text[-3000:]}"
    # DEBUG logging was on, so there was plenty to leak from.
    assert logs["spawner"].count('"level": "DEBUG"') > 10


def _use_a_session_token(url: str) -> str:
    """A session token from /start, used once, so it has had its chance to be logged."""
    with httpx.Client(base_url=url, timeout=10) as client:
        started: dict[str, Any] = client.post(
            "/start", json={}, headers={"Authorization": f"Bearer {API_KEY}"}
        ).json()
        page = {"Authorization": f"Bearer {started['token']}"}
        assert client.get(f"/api/sessions/{started['sessionId']}", headers=page).status_code == 200
        assert client.delete(f"/api/sessions/{started['sessionId']}", headers=page).is_success
    return str(started["token"])

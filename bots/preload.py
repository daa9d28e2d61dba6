"""Imported once by the zygote (the multiprocessing fork server) before it forks any bot.

Everything heavy and fork-safe is imported here so each bot starts with it already in memory,
shared copy-on-write. Objects that own threads or native sessions (onnxruntime inference
sessions, aiortc peers, event loops) are not fork-safe and are created in each bot after the
fork, by :func:`bots.connection.prepare_connection` and the bot file's ``bot()``. What
they are built from can be made here: the VAD's graph as onnxruntime optimizes it is
computed once (:func:`bots.vad.optimized_graph`), and only its bytes are inherited.

A module a bot imports itself costs it twice: CPU while it warms up or, worse, on the first
turn's critical path, and private memory for the module's objects. To see what bots still
import after the fork, run the spawner with ``PYTHONPROFILEIMPORTTIME=1``, make a call, and
read its log after "zygote ready" (uvicorn's and multiprocessing's lines are the spawner's).
"""

import contextlib
import gc
import importlib
import os

import aiortc  # noqa: F401
import onnxruntime  # noqa: F401
import pipecat.audio.vad.silero
import pipecat.pipeline.runner
import pipecat.runner.types
import pipecat.runner.utils
import pipecat.services.elevenlabs.tts
import pipecat.services.openai.llm
import pipecat.services.openai.stt
import pipecat.services.openai.tts
import pipecat.transports.smallwebrtc.transport  # noqa: F401
import uvloop  # noqa: F401

import bots.process
import bots.providers.espeak_tts
import bots.providers.offline_llm
import bots.providers.offline_stt
import bots.recording
import bots.request_rehearsal
import bots.vad
from bots.bot_file import BOT_ENV, BUILTIN_BOT, load_bot

#: Modules otherwise imported inside each bot, after the fork.
LAZY_MODULES = (
    # multiprocessing re-runs the parent's main module in every child before the bot starts
    # ("main module fixup"). ``python -m voicebots`` is exempt (a package's ``__main__``); the
    # ``voicebots`` console script is not, and imports ``voicebots.cli``: with it here, the
    # re-run only rebinds names instead of importing redis in every bot.
    "argparse",
    "redis",
    "voicebots.cli",
    # The HTTP backend of the OpenAI clients' first connection, and the event loop backend
    # its connection pool asks for at the first request.
    "anyio._backends._asyncio",
    "anyio._core._sockets",
    "anyio._core._streams",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "jiter",
    # DTLS at the first offer: aiortc serializes its certificate, ciphers from cryptography.
    "cryptography.hazmat.backends.openssl.backend",
    "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.serialization",
    # importlib.resources, through which pipecat finds the Silero model.
    "importlib.resources.readers",
    "importlib.readers",
)


for _name in LAZY_MODULES:
    # A module that a later version of a dependency no longer has only costs speed.
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)
bots.request_rehearsal.rehearse_requests()
bots.vad.optimized_graph()

# The bot file, once: its imports and whatever it loads at import time are shared by every
# bot. The fork server inherits the spawner's environment, its only configuration; the
# spawner has checked the file before it started the zygote.
load_bot(os.environ.get(BOT_ENV, BUILTIN_BOT))

# Objects that exist now live as long as the zygote; moving them out of the collector's
# generations keeps a bot's first collections from writing to (and so copying) their pages.
gc.collect()
gc.freeze()

# One image for every voicebots process: `voicebots signaling`, `voicebots spawner` (which
# forks the bots) and `voicebots worker`; `voicebots up` runs all three in one container.
# Local demo: `docker compose up` (docker-compose.yml). Fly.io: deploy/fly/README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# espeak-ng speaks for the offline TTS provider. Every Python dependency ships as a wheel that
# carries its own native libraries (PyAV's FFmpeg, onnxruntime, pocketsphinx and its model).
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies before source: this layer (the slow one) is rebuilt only when pyproject.toml
# changes, not on every edit of the code.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "setuptools>=68" \
    && rm /tmp/requirements.txt

COPY common/ common/
COPY signaling/ signaling/
COPY spawner/ spawner/
COPY bots/ bots/
COPY media/ media/
# pyproject.toml's packages include benchmarks/ (`voicebots bench`): setuptools needs it.
COPY benchmarks/ benchmarks/
COPY voicebots/ voicebots/
COPY web/ web/
COPY README.md ./
# Fly.io's `app` process (spawner + signaling, drained in that order); see deploy/fly/.
COPY deploy/fly/app.sh deploy/fly/app.sh
# Editable, so the code (and web/, found next to it) stays in /app. Dependencies and the
# build backend are installed already: no network, no isolated build environment.
RUN pip install --no-deps --no-build-isolation --editable . \
    && useradd --create-home --uid 10001 --user-group voicebots \
    && install -d -o voicebots -g voicebots /var/lib/voicebots/spool

# Records that could not reach Redis wait here; docker-compose.yml keeps it on a volume.
ENV VOICEBOTS_SPOOL_DIR=/var/lib/voicebots/spool

USER voicebots
# Signaling's HTTP port, and the default VOICEBOTS_UDP_PORTS range (published 1:1).
EXPOSE 7860/tcp 40000-40031/udp
CMD ["voicebots", "up"]

"""Debian's Chromium driven by Playwright, with a fake microphone playing a speech WAV.

Playwright's own browser downloads are never used: tests launch ``/usr/bin/chromium``
(``apt-get install chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Playwright, sync_playwright

from tests import ROOT

__all__ = ["ARTIFACTS", "CHROMIUM", "launch_chromium", "make_mic_wav", "run_playwright"]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"

#: Flags that keep a headless Chromium quiet, offline and on loopback-friendly media.
_BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
]


def make_mic_wav(source: Path, out: Path, lead_s: float, tail_s: float) -> Path:
    """``source`` as 48 kHz mono 16-bit (what WebRTC captures at), padded with silence.

    Chromium loops the fake capture file, so the tail keeps the caller quiet for the rest
    of the test; the lead lets the bot's greeting finish before the caller speaks.
    """
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError("sox is not installed (apt-get install sox)")
    subprocess.run(
        [
            sox,
            str(source),
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            str(out),
            "pad",
            str(lead_s),
            str(tail_s),
        ],
        check=True,
        capture_output=True,
    )
    return out


@contextmanager
def run_playwright() -> Iterator[Playwright]:
    """Playwright's sync API; one at a time per thread (it runs its own event loop)."""
    with sync_playwright() as playwright:
        yield playwright


def launch_chromium(
    playwright: Playwright,
    mic_wav: Path | None = None,
    *,
    auto_allow_mic: bool = True,
    extra_args: Sequence[str] = (),
) -> Browser:
    """A headless Chromium whose microphone plays ``mic_wav`` (a beep without one).

    With ``auto_allow_mic`` false, Chromium shows no fake permission UI, so a page that asks
    for the microphone without a granted permission is refused. The caller closes it.
    """
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    args = list(_BASE_ARGS)
    if auto_allow_mic:
        args.append("--use-fake-ui-for-media-stream")
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    args.extend(extra_args)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)

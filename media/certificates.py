"""The DTLS certificate of a peer connection, its fingerprints computed once.

aiortc describes its DTLS parameters four times per answer (twice building it, twice setting
it), and each time it hashes the certificate three times (SHA-256, -384, -512) and formats the
digests: ~29 µs each time in a warm process. A certificate never changes, so :func:`install`
makes the peer connections aiortc creates from then on, in this process, generate
certificates that compute their fingerprints once.
"""

from __future__ import annotations

import aiortc.rtcpeerconnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint

__all__ = ["FingerprintedCertificate", "install", "uninstall"]


class FingerprintedCertificate(RTCCertificate):
    """An :class:`aiortc.RTCCertificate` that remembers its fingerprints."""

    _fingerprints: list[RTCDtlsFingerprint] | None = None

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        # A new list each time, as aiortc's: a caller may keep or change it.
        return list(self._fingerprints)


def install() -> None:
    """Peer connections created from now on, in this process, generate a
    :class:`FingerprintedCertificate`."""
    # aiortc's RTCPeerConnection looks the class up in its module when it is created.
    setattr(aiortc.rtcpeerconnection, "RTCCertificate", FingerprintedCertificate)  # noqa: B010


def uninstall() -> None:
    setattr(aiortc.rtcpeerconnection, "RTCCertificate", RTCCertificate)  # noqa: B010

"""Media settings: what each variable becomes, and the message a bad value stops start-up with."""

from __future__ import annotations

import pytest

from media.config import MediaConfig
from media.ports import PortRange

TURN = "turn:turn.example.org:3478?transport=udp"


def test_defaults_change_nothing() -> None:
    config = MediaConfig.from_env({})
    assert config == MediaConfig()
    assert not config.shapes_ice
    assert config.resolve_bind_host() == ""
    assert config.ice_config() == {"iceServers": []}


def test_every_setting() -> None:
    config = MediaConfig.from_env(
        {
            "VOICEBOTS_ICE_SERVERS": f"stun:stun.example.org:3478, {TURN}",
            "VOICEBOTS_TURN_USERNAME": "user",
            "VOICEBOTS_TURN_CREDENTIAL": "secret",
            "VOICEBOTS_UDP_PORTS": "40000-40031",
            "VOICEBOTS_BIND_HOST": "fly-global-services",
            "VOICEBOTS_PUBLIC_IP": "203.0.113.10",
        }
    )
    assert config == MediaConfig(
        ice_servers=("stun:stun.example.org:3478", TURN),
        turn_username="user",
        turn_credential="secret",
        udp_ports=PortRange(40000, 40031),
        bind_host="fly-global-services",
        public_ip="203.0.113.10",
    )
    assert config.shapes_ice
    assert "secret" not in repr(config)
    # Clients get every server; TURN with its credentials, as RTCIceServer expects them.
    assert config.ice_config() == {
        "iceServers": [
            {"urls": "stun:stun.example.org:3478"},
            {"urls": TURN, "username": "user", "credential": "secret"},
        ]
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"VOICEBOTS_UDP_PORTS": "40000"},
            "VOICEBOTS_UDP_PORTS must look like 40000-40031 (first-last), got '40000'",
        ),
        (
            {"VOICEBOTS_UDP_PORTS": "50000-40000"},
            "VOICEBOTS_UDP_PORTS must be a range within 1024-65535 with first <= last, "
            "got '50000-40000'",
        ),
        (
            {"VOICEBOTS_PUBLIC_IP": "my.host.example"},
            "VOICEBOTS_PUBLIC_IP must be an IPv4 address, got 'my.host.example'",
        ),
        (
            {"VOICEBOTS_PUBLIC_IP": "2001:db8::1"},
            "VOICEBOTS_PUBLIC_IP must be an IPv4 address, got '2001:db8::1'",
        ),
        (
            {"VOICEBOTS_PUBLIC_IP": "0.0.0.0"},
            "VOICEBOTS_PUBLIC_IP must be an IPv4 address, got '0.0.0.0'",
        ),
        (
            {"VOICEBOTS_BIND_HOST": "0.0.0.0"},
            "VOICEBOTS_BIND_HOST must name one address (e.g. fly-global-services or 10.0.0.5), "
            "not the wildcard '0.0.0.0'",
        ),
        (
            {"VOICEBOTS_BIND_HOST": "a..b"},
            "VOICEBOTS_BIND_HOST must be a host name or an address, got 'a..b'",
        ),
        (
            {"VOICEBOTS_ICE_SERVERS": "stun.example.org:3478"},
            "VOICEBOTS_ICE_SERVERS entries must look like stun:host[:port] or "
            "turn:host[:port][?transport=udp|tcp] (or stuns:, turns:), got 'stun.example.org:3478'",
        ),
        (
            {"VOICEBOTS_ICE_SERVERS": "stun:stun.example.org?transport=udp"},
            "VOICEBOTS_ICE_SERVERS entries must look like",
        ),
        (
            {"VOICEBOTS_ICE_SERVERS": TURN},
            "a turn: server in VOICEBOTS_ICE_SERVERS needs VOICEBOTS_TURN_USERNAME and "
            "VOICEBOTS_TURN_CREDENTIAL",
        ),
        (
            {"VOICEBOTS_TURN_USERNAME": "user", "VOICEBOTS_TURN_CREDENTIAL": "secret"},
            "VOICEBOTS_TURN_USERNAME/VOICEBOTS_TURN_CREDENTIAL are set but "
            "VOICEBOTS_ICE_SERVERS has no turn: or turns: server",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        MediaConfig.from_env(env)
    assert str(caught.value).startswith(message)


def test_bind_host_resolves_once_to_an_address() -> None:
    # "localhost" comes from /etc/hosts, as fly-global-services does on Fly.io.
    assert MediaConfig(bind_host="localhost").resolve_bind_host() == "127.0.0.1"
    assert MediaConfig(bind_host="127.0.0.1").resolve_bind_host() == "127.0.0.1"


def test_an_ipv6_bind_host_cannot_hide_behind_an_ipv4_public_ip() -> None:
    with pytest.raises(ValueError) as caught:
        MediaConfig(bind_host="::1", public_ip="203.0.113.10").resolve_bind_host()
    assert str(caught.value) == (
        "VOICEBOTS_BIND_HOST '::1' has no IPv4 address (::1) for VOICEBOTS_PUBLIC_IP "
        "203.0.113.10 to stand for"
    )

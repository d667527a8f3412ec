"""Interface selection with fabricated ifaddr data, plus one call on the real machine."""

from __future__ import annotations

import ifaddr
import pytest

from lanchat import netif
from lanchat.netif import (
    Candidate,
    NetifError,
    NoLanInterface,
    choose_address,
    in_same_subnet,
    is_private_or_local,
    list_interfaces,
)


def adapter(name: str, *ips: tuple[str, int], nice_name: str | None = None) -> ifaddr.Adapter:
    made = []
    for ip, prefix in ips:
        # ifaddr's convention: IPv4 as a str, IPv6 as (address, flowinfo, scope_id).
        address: str | tuple[str, int, int] = (ip, 0, 0) if ":" in ip else ip
        made.append(ifaddr.IP(address, prefix, name))
    return ifaddr.Adapter(name, nice_name or name, made)


LAPTOP = [
    adapter("lo", ("127.0.0.1", 8), ("::1", 128)),
    adapter("docker0", ("172.17.0.1", 16)),
    adapter("wg0", ("10.8.0.2", 24)),
    adapter("tailscale0", ("100.101.102.103", 32)),
    adapter("enp0s31f6", ("169.254.10.20", 16)),
    adapter("wlp2s0", ("192.168.1.37", 24), ("fe80::1", 64)),
    adapter("ip6tnl0", ("fe80::2", 64)),
    adapter("dummy0"),
]


def reasons(adapters: list[ifaddr.Adapter]) -> dict[str, str]:
    return {c.name: c.reason for c in list_interfaces(adapters)}


def test_skips_everything_that_is_not_a_lan_and_says_why() -> None:
    assert reasons(LAPTOP) == {
        "wlp2s0": "",
        "lo": "loopback",
        "docker0": "virtual interface (docker/bridge/veth/VPN/tun/wg)",
        "wg0": "virtual interface (docker/bridge/veth/VPN/tun/wg)",
        "tailscale0": "virtual interface (docker/bridge/veth/VPN/tun/wg)",
        "enp0s31f6": "link-local address (no DHCP?)",
        "ip6tnl0": "IPv6 only",
        "dummy0": "no address",
    }


def test_chooses_the_wifi_address() -> None:
    assert choose_address(None, LAPTOP) == Candidate("wlp2s0", "192.168.1.37", 24, True, "")


@pytest.mark.parametrize(
    "name",
    [
        *("docker0", "br-1a2b", "veth12", "virbr0", "vboxnet0", "vmnet8", "tun0", "tap1"),
        *("wg0", "tailscale0", "zt5u4y", "utun3", "ppp0", "lxcbr0", "cni0", "flannel.1"),
        *("cali12", "podman0", "vnet3", "vpn0", "Docker0"),
    ],
)
def test_virtual_names_are_skipped(name: str) -> None:
    (candidate,) = list_interfaces([adapter(name, ("192.168.5.1", 24))])
    assert not candidate.usable
    assert "virtual" in candidate.reason


@pytest.mark.parametrize(
    ("nice_name", "usable"),
    [
        ("Intel(R) Wi-Fi 6 AX201 160MHz", True),
        ("vEthernet (WSL)", False),
        ("TAP-Windows Adapter V9", False),
        ("VPN Client Adapter - VPN", False),
    ],
)
def test_windows_descriptive_name_is_checked_too(nice_name: str, usable: bool) -> None:
    guid = "{4D36E972-E325-11CE-BFC1-08002BE10318}"  # what ifaddr calls it on Windows
    (candidate,) = list_interfaces([adapter(guid, ("10.1.2.3", 24), nice_name=nice_name)])
    assert candidate.usable is usable


def test_cgnat_range_is_skipped() -> None:
    (candidate,) = list_interfaces([adapter("eth0", ("100.64.3.4", 10))])
    assert not candidate.usable
    assert "100.64.0.0/10" in candidate.reason


def test_prefers_rfc1918_then_a_stable_order() -> None:
    adapters = [
        adapter("eth1", ("130.0.0.5", 16)),
        adapter("eth2", ("10.0.0.9", 8)),
        adapter("eth0", ("192.168.0.2", 24), ("192.168.0.1", 24)),
    ]
    ordered = [c.address for c in list_interfaces(adapters)]
    assert ordered == ["192.168.0.1", "192.168.0.2", "10.0.0.9", "130.0.0.5"]
    assert choose_address(None, adapters).address == "192.168.0.1"
    assert choose_address(None, list(reversed(adapters))).address == "192.168.0.1"
    # A public address on a real NIC is still a LAN if nothing better exists.
    assert choose_address(None, adapters[:1]).address == "130.0.0.5"


def test_explicit_address_or_name_wins_even_if_skipped_by_default() -> None:
    assert choose_address("192.168.1.37", LAPTOP).name == "wlp2s0"
    chosen = choose_address("docker0", LAPTOP)
    assert chosen.address == "172.17.0.1"
    assert not chosen.usable  # so the caller can warn


def test_explicit_address_not_on_this_machine_lists_what_exists() -> None:
    with pytest.raises(NetifError, match=r"192\.168\.1\.37 \(wlp2s0\)") as caught:
        choose_address("192.168.9.9", LAPTOP)
    assert not isinstance(caught.value, NoLanInterface)


def test_no_usable_interface_explains_every_skip() -> None:
    with pytest.raises(NoLanInterface) as caught:
        choose_address(None, LAPTOP[:5])
    message = str(caught.value)
    assert "docker0 172.17.0.1/16: virtual interface" in message
    assert "lo 127.0.0.1/8: loopback" in message
    assert "enp0s31f6 169.254.10.20/16: link-local address (no DHCP?)" in message
    with pytest.raises(NoLanInterface, match="no interfaces at all"):
        choose_address(None, [])


def test_in_same_subnet() -> None:
    me = Candidate("eth0", "10.77.0.1", 24, True)
    assert in_same_subnet(me, "10.77.0.200")
    assert not in_same_subnet(me, "10.77.1.2")
    assert not in_same_subnet(me, "nonsense")
    assert not in_same_subnet(me, "fe80::1")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.0.1", True),
        ("127.0.0.1", True),
        ("169.254.1.1", True),
        ("100.64.0.1", True),
        ("100.128.0.1", False),
        ("8.8.8.8", False),
        ("::1", False),
        ("garbage", False),
    ],
)
def test_is_private_or_local(address: str, expected: bool) -> None:
    assert is_private_or_local(address) is expected


def test_real_machine() -> None:
    candidates = list_interfaces()
    assert candidates, "every machine has at least a loopback interface"
    assert all(isinstance(c, Candidate) for c in candidates)
    loopback = [c for c in candidates if c.address.startswith("127.")]
    assert all(not c.usable and c.reason == "loopback" for c in loopback)
    if any(c.usable for c in candidates):
        chosen = choose_address(None)
        assert chosen.usable
        assert choose_address(chosen.address) == chosen
    else:
        with pytest.raises(NoLanInterface, match="loopback"):
            choose_address(None)


def test_the_system_listing_is_reused_for_a_moment_then_taken_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def fake_adapters() -> list[ifaddr.Adapter]:
        calls.append(1)
        return LAPTOP

    clock = [1000.0]
    monkeypatch.setattr(netif, "_system_listing", None)
    monkeypatch.setattr(ifaddr, "get_adapters", fake_adapters)
    monkeypatch.setattr(netif.time, "monotonic", lambda: clock[0])
    first = list_interfaces()
    assert choose_address(None) == Candidate("wlp2s0", "192.168.1.37", 24, True, "")
    first.clear()  # callers get their own list
    assert netif.interface_of("192.168.1.37") == "wlp2s0"
    assert len(calls) == 1
    clock[0] += netif.SYSTEM_LISTING_TTL_S
    assert list_interfaces() == list_interfaces(LAPTOP)
    assert len(calls) == 2
    monkeypatch.setattr(netif, "_system_listing", None)


def test_link_state_without_sys_follows_the_interface_address() -> None:
    # macOS and Windows have no /sys/class/net: an interface is up while it holds IPv4.
    wifi = adapter("en0", ("192.168.1.23", 24))
    assert netif.link_state("en0", [wifi]) == "up"
    assert netif.link_state("en0", [adapter("en0", ("fe80::1", 64))]) == "down"
    assert netif.link_state("en0", [adapter("en0")]) == "down"
    assert netif.link_state("en0", [adapter("en1", ("192.168.1.24", 24))]) == "down"


def test_link_state_of_this_machine_is_known_for_its_loopback() -> None:
    loopback = next(c for c in netif.list_interfaces() if c.reason == netif.REASON_LOOPBACK)
    assert netif.link_state(loopback.name) in ("up", "unknown")  # Linux says "unknown" for lo

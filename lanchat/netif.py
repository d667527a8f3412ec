"""Pick the LAN interface and IPv4 address to advertise, and keep traffic on the LAN.

The wrong interface (docker0, a VPN, a virtual bridge) is the most common LAN
chat complaint, so every skipped interface carries a plain-words reason that
the CLI and `lanchat doctor` can show.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ifaddr

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "Candidate",
    "NetifError",
    "NoLanInterface",
    "choose_address",
    "in_same_subnet",
    "is_private_or_local",
    "list_interfaces",
]

REASON_LOOPBACK = "loopback"
REASON_LINK_LOCAL = "link-local address (no DHCP?)"
REASON_VIRTUAL = "virtual interface (docker/bridge/veth/VPN/tun/wg)"
REASON_CGNAT = "carrier-grade NAT / VPN range (100.64.0.0/10)"
REASON_IPV6_ONLY = "IPv6 only"
REASON_NO_ADDRESS = "no address"

# Name prefixes of interfaces that are not the room's LAN: container and VM
# bridges, VPN tunnels, overlay networks. Matched case-insensitively.
VIRTUAL_PREFIXES = (
    "docker",
    "br-",
    "veth",
    "virbr",
    "vboxnet",
    "vmnet",
    "tun",
    "tap",
    "wg",
    "tailscale",
    "zt",
    "utun",
    "ppp",
    "lxc",
    "cni",
    "flannel",
    "cali",
    "podman",
    "vnet",
    "vpn",
)

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
_LAN_OR_LOCAL = (*_RFC1918, _LOOPBACK, _LINK_LOCAL, _CGNAT)
# A start asks for the machine's interfaces three times within milliseconds (the CLI picks
# the address, the node names its interface, discovery takes the subnet); one listing, kept
# this long, answers all three. Link up/down is watched separately (link_state).
SYSTEM_LISTING_TTL_S = 1.0
_system_listing: tuple[float, list[Candidate]] | None = None


class NetifError(Exception):
    """The requested interface or address cannot be used."""


class NoLanInterface(NetifError):
    """No interface looks like a real LAN; the message lists what was skipped and why."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One address on one interface, and whether lanchat would use it by default."""

    name: str
    address: str
    prefixlen: int
    usable: bool
    reason: str = ""

    def describe(self) -> str:
        where = f"{self.name} {self.address}/{self.prefixlen}" if self.address else self.name
        return where if self.usable else f"{where}: {self.reason}"


def _is_virtual(*names: str) -> bool:
    return any(name.lower().startswith(VIRTUAL_PREFIXES) for name in names if name)


def _skip_reason(adapter: ifaddr.Adapter, address: ipaddress.IPv4Address) -> str:
    if address in _LOOPBACK or adapter.name == "lo":
        return REASON_LOOPBACK
    if address in _LINK_LOCAL:
        return REASON_LINK_LOCAL
    # On Windows ifaddr's name is a GUID; the descriptive name is nice_name.
    if _is_virtual(adapter.name, adapter.nice_name):
        return REASON_VIRTUAL
    if address in _CGNAT:
        return REASON_CGNAT
    return ""


def _sort_key(candidate: Candidate) -> tuple[bool, bool, str, int]:
    # Usable first, RFC 1918 before public LAN addresses, then by name and
    # address so the choice is the same on every run.
    address = ipaddress.IPv4Address(candidate.address)
    private = any(address in net for net in _RFC1918)
    return (not candidate.usable, not private, candidate.name, int(address))


def list_interfaces(adapters: Iterable[ifaddr.Adapter] | None = None) -> list[Candidate]:
    """Every local IPv4 address (plus IPv6-only/addressless interfaces, as unusable).

    `adapters` defaults to `ifaddr.get_adapters()` (a listing at most SYSTEM_LISTING_TTL_S
    old); tests pass fabricated ones.
    """
    global _system_listing
    if adapters is not None:
        return _candidates(adapters)
    now = time.monotonic()
    if _system_listing is None or not 0 <= now - _system_listing[0] < SYSTEM_LISTING_TTL_S:
        _system_listing = (now, _candidates(ifaddr.get_adapters()))
    return list(_system_listing[1])


def _candidates(adapters: Iterable[ifaddr.Adapter]) -> list[Candidate]:
    found: list[Candidate] = []
    addressless: list[Candidate] = []
    for adapter in adapters:
        # ifaddr gives an IPv4 address as a str and an IPv6 one as a tuple.
        v4 = [(ip.ip, ip.network_prefix) for ip in adapter.ips if isinstance(ip.ip, str)]
        for text, prefixlen in v4:
            address = ipaddress.IPv4Address(text)
            reason = _skip_reason(adapter, address)
            found.append(Candidate(adapter.name, str(address), prefixlen, not reason, reason))
        if v4:
            continue
        v6 = [(ip.ip[0], ip.network_prefix) for ip in adapter.ips if isinstance(ip.ip, tuple)]
        if v6:
            addressless.append(Candidate(adapter.name, *v6[0], False, REASON_IPV6_ONLY))
        else:
            addressless.append(Candidate(adapter.name, "", 0, False, REASON_NO_ADDRESS))
    found.sort(key=_sort_key)
    addressless.sort(key=lambda c: c.name)
    return found + addressless


def choose_address(
    explicit: str | None = None, adapters: Iterable[ifaddr.Adapter] | None = None
) -> Candidate:
    """The address to advertise: `explicit` (an IPv4 address or interface name) or the best LAN one.

    An explicit choice is returned even if the default rules would skip it
    (its `usable`/`reason` tell the caller what to warn about).
    """
    candidates = list_interfaces(adapters)
    ipv4 = [c for c in candidates if c.reason not in (REASON_IPV6_ONLY, REASON_NO_ADDRESS)]
    if explicit is not None:
        wanted = explicit.strip()
        for candidate in ipv4:
            if wanted in (candidate.address, candidate.name):
                return candidate
        have = ", ".join(f"{c.address} ({c.name})" for c in ipv4) or "none"
        raise NetifError(
            f"{explicit!r} is not an IPv4 address or interface name of this machine; "
            f"local IPv4 addresses: {have}"
        )
    for candidate in candidates:
        if candidate.usable:
            return candidate
    skipped = "; ".join(c.describe() for c in candidates) or "no interfaces at all"
    raise NoLanInterface(
        "no usable LAN interface found (skipped: "
        f"{skipped}). Connect to the room's Wi-Fi or network, or name one with --interface."
    )


def in_same_subnet(candidate: Candidate, address: str) -> bool:
    """Whether `address` is on the same IPv4 subnet as `candidate` (False if not an address)."""
    try:
        network = ipaddress.IPv4Network(f"{candidate.address}/{candidate.prefixlen}", strict=False)
        return ipaddress.IPv4Address(address) in network
    except ValueError:
        return False


def is_private_or_local(address: str) -> bool:
    """Whether `address` is RFC 1918, loopback, link-local or CGNAT (IPv4 only)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return any(ip in net for net in _LAN_OR_LOCAL)


_SYS_NET = Path("/sys/class/net")


def link_state(name: str, adapters: Iterable[ifaddr.Adapter] | None = None) -> str | None:
    """'up', 'down', 'dormant'... as the kernel reports it; None where unknown.

    Linux says it in /sys. macOS and Windows have no such file: there an interface that no
    longer holds an IPv4 address (a cable pulled, Wi-Fi left) is 'down' and one that does
    is 'up', from the same listing (ifaddr) that chose it. ``adapters`` is for tests.
    """
    if adapters is None:
        try:
            return (_SYS_NET / name / "operstate").read_text().strip()
        except OSError:
            pass  # not Linux (or, under Wine, Linux's /sys without Windows' names)
    candidates = list_interfaces(adapters)
    if not any(c.name == name for c in candidates):
        return "down"  # gone altogether (Windows removes a disconnected adapter's entry)
    held = any(c.name == name and c.address and c.reason != REASON_IPV6_ONLY for c in candidates)
    return "up" if held else "down"


def interface_of(address: str) -> str | None:
    """The name of the local interface holding ``address``."""
    for candidate in list_interfaces():
        if candidate.address == address:
            return candidate.name
    return None

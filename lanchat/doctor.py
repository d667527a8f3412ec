"""`lanchat doctor`: explain in plain words why a user sees nobody, and what to do.

Checks, in the order a helper at the next desk would go through them:
1. which interfaces lanchat would use, which it skips and why, and whether the link is up;
2. whether multicast works on the chosen interface (a second mDNS responder on this machine
   must hear an announcement of ours: that proves send and receive through the interface),
   and whether our own broadcast comes back (a firewall on this laptop stops either);
3. what the network passes between laptops: mDNS from any other host (lanchat or not:
   printers and phones chatter), lanchat's broadcast beacon from other nodes (it answers
   our query), or nothing at all (client isolation, or nobody there);
4. which lanchat nodes and brokers are visible, per room;
5. whether their ports answer (TCP), which a firewall may block.
The exit status is 0 when everything needed to chat works, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

# DNSOutgoing and DNSQuestion: importable from zeroconf's top level, just not in __all__.
from zeroconf import (  # type: ignore[attr-defined]
    DNSOutgoing,
    DNSQuestion,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from lanchat import identity as ident
from lanchat import oscompat
from lanchat.beacon import BeaconSocket
from lanchat.core import beacon as bc
from lanchat.core.advert import SERVICE_TYPE, Advert, AdvertError
from lanchat.netif import Candidate, NetifError, choose_address, link_state, list_interfaces

__all__ = ["Report", "diagnose", "main"]

PROBE_TYPE = "_lanchat-doctor._udp.local."
LISTEN_S = 2.0
MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
# Every mDNS responder answers this (RFC 6763 section 9): printers, phones, other laptops.
SERVICES_QUERY = "_services._dns-sd._udp.local."


@dataclass(slots=True)
class Report:
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def good(self, text: str) -> None:
        self.lines.append(f"  ok   {text}")

    def info(self, text: str) -> None:
        self.lines.append(f"  ..   {text}")

    def bad(self, text: str, advice: str) -> None:
        self.ok = False
        self.lines.append(f"  FAIL {text}")
        if advice not in self.advice:
            self.advice.append(advice)


# What to do about a firewall, in the words of the OS the user is sitting at.
_MULTICAST_ADVICE = {
    "win32": (
        "Multicast is blocked on this machine. Windows Firewall lets lanchat (python.exe) "
        "receive only after you allow it: when Windows asks, tick 'Private networks' and "
        "click Allow (or Windows Security > Firewall & network protection > Allow an app "
        "through firewall > Python: Private), and make sure this network is set to Private, "
        "not Public (Settings > Network & internet > your network). Or use --connect HOST."
    ),
    "darwin": (
        "Multicast is blocked on this machine. macOS asks twice: allow your terminal app to "
        "'find devices on your local network' (System Settings > Privacy & Security > Local "
        "Network), and answer Allow when asked to 'accept incoming network connections' "
        "(System Settings > Network > Firewall > Options). A VPN can block it too. Or use "
        "--connect HOST."
    ),
}
_MULTICAST_ADVICE_OTHER = (
    "Multicast is blocked on this machine (firewall, VPN). Allow UDP port 5353 "
    "(e.g. the 'private network' firewall profile, or sudo ufw allow 5353/udp) or use "
    "--connect HOST."
)
_BROKER_ADVICE = (
    "A firewall on the broker's laptop (or between) blocks its TCP ports: allow lanchat in "
    "the firewall, or ask the broker to (Windows: allow Python on private networks; macOS: "
    "Allow incoming connections; Linux: e.g. sudo ufw allow from THE_LAN_SUBNET)."
)


_ISOLATION_ADVICE = (
    "Nothing from any other laptop reached this one, neither mDNS nor lanchat's broadcast: "
    "this network isolates laptops from each other (client isolation, common on guest and "
    "school Wi-Fi) or you are alone on it. Use a wired switch or a phone hotspot, or ask "
    "the mentor for the address shown on their screen and start with  lanchat --connect "
    "THAT_ADDRESS"
)
_BROADCAST_ADVICE = (
    "Broadcast is blocked on this machine (a firewall on this laptop drops inbound UDP "
    "port 47100, lanchat's fallback where multicast is filtered): allow lanchat in the "
    "firewall (Linux: e.g. sudo ufw allow 47100/udp)."
)


def firewall_advice(what: str, platform: str = sys.platform) -> str:
    """Advice for a blocked ``"multicast"`` here, or a ``"broker"`` whose ports are closed."""
    if what == "broker":
        return _BROKER_ADVICE
    return _MULTICAST_ADVICE.get(platform, _MULTICAST_ADVICE_OTHER)


async def _multicast_roundtrip(address: str, timeout_s: float) -> bool:
    """Register a throw-away service on one responder and browse for it from another."""
    name = f"doctor-{secrets.token_hex(4)}.{PROBE_TYPE}"
    speaker = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    listener = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    heard = asyncio.Event()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Added and name == probe_name:
            heard.set()

    probe_name = name
    browser = AsyncServiceBrowser(listener.zeroconf, PROBE_TYPE, handlers=[on_change])
    info = AsyncServiceInfo(
        PROBE_TYPE,
        name,
        addresses=[socket.inet_aton(address)],
        port=9,
        properties={"doctor": "1"},
        server=f"doctor-{secrets.token_hex(4)}.local.",
    )
    try:
        await speaker.async_register_service(info, cooperating_responders=True)
        try:
            await asyncio.wait_for(heard.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
    finally:
        await browser.async_cancel()
        await speaker.async_unregister_all_services()
        await speaker.async_close()
        await listener.async_close()


async def _browse(address: str, listen_s: float) -> list[Advert]:
    azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    # Every responder answers this: other hosts' mDNS is heard even with no lanchat there.
    out = DNSOutgoing(0)
    out.add_question(DNSQuestion(SERVICES_QUERY, 12, 1))  # PTR, IN
    azc.zeroconf.async_send(out)
    try:
        await asyncio.sleep(listen_s)  # a survey: listen for a fixed window
        adverts = []
        for name in sorted(names):
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(azc.zeroconf, 1000):
                continue
            addrs = info.parsed_addresses(IPVersion.V4Only)
            handle = name[: -len(SERVICE_TYPE) - 1]
            try:
                adverts.append(Advert.from_txt(handle, addrs[0] if addrs else "", info.properties))
            except (AdvertError, IndexError):
                continue
        return adverts
    finally:
        await browser.async_cancel()
        await azc.async_close()


async def _sniff_mdns(address: str, listen_s: float) -> set[str]:
    """Source addresses of the mDNS packets heard on ``address``'s interface meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    heard: set[str] = set()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Bound to the group (not to the port on every address) so that no unicast answer
        # meant for the responders of this machine is taken from them; Windows binds no
        # multicast address.
        sock.bind(("" if sys.platform == "win32" else MDNS_GROUP, MDNS_PORT))
        membership = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(address)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + listen_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    _data, source = await loop.sock_recvfrom(sock, 9000)
            except TimeoutError:
                break
            heard.add(str(source[0]))
    finally:
        sock.close()
    return heard


@dataclass(slots=True)
class _Broadcast:
    opened: bool = False
    error: str = ""
    own_came_back: bool = False
    others: dict[bytes, Advert] = field(default_factory=dict)


async def _listen_beacons(candidate: Candidate, listen_s: float) -> _Broadcast:
    """Ask who is there by broadcast (lanchat nodes answer with their beacon), and listen."""
    result = _Broadcast()

    def heard(data: bytes, source: str) -> None:
        if source == candidate.address:
            result.own_came_back |= bc.is_query(data)
            return
        with contextlib.suppress(bc.BeaconError):
            beacon = bc.decode(data, source, ident.verify)
            if not beacon.bye:
                result.others[beacon.advert.id_key] = beacon.advert

    sock = BeaconSocket(candidate)
    try:
        await sock.open(heard)
    except OSError as exc:
        result.error = str(exc)
        return result
    result.opened = True
    try:
        # Twice: a node answers at most once per MIN_GAP_S, and a packet may be lost.
        sock.send(bc.QUERY)
        await asyncio.sleep(listen_s / 2)
        sock.send(bc.QUERY)
        await asyncio.sleep(listen_s / 2)
    finally:
        sock.close()
    return result


async def _port_open(address: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def diagnose(interface: str | None, room: str | None, listen_s: float = LISTEN_S) -> Report:
    report = Report()
    report.lines.append("Network interfaces:")
    candidates = list_interfaces()
    for cand in candidates:
        if cand.usable:
            report.info(f"{cand.describe()} (usable)")
        else:
            report.info(f"skipped {cand.describe()}")
    try:
        chosen: Candidate = choose_address(interface)
    except NetifError as exc:
        report.bad(
            str(exc),
            "Connect this laptop to the room's Wi-Fi or cable, or name the interface with "
            "--interface.",
        )
        return report
    report.facts["address"] = chosen.address
    report.good(f"lanchat would use {chosen.name} {chosen.address}/{chosen.prefixlen}")
    state = link_state(chosen.name)
    if state is not None and state not in ("up", "unknown"):
        report.bad(
            f"the link of {chosen.name} is {state}",
            "Your network connection is off: reconnect to the Wi-Fi or plug the cable in.",
        )
        return report

    report.lines.append("Multicast (mDNS) on this interface:")
    try:
        works = await _multicast_roundtrip(chosen.address, timeout_s=min(2.0, listen_s + 0.5))
    except OSError as exc:
        works = False
        report.facts["multicast_error"] = str(exc)
    report.facts["multicast"] = works
    if works:
        report.good("our own mDNS announcement came back: multicast send and receive work")
    else:
        report.bad(
            "our own mDNS announcement never came back",
            firewall_advice("multicast"),
        )

    report.lines.append(f"Other laptops on this network (listening {listen_s:.1f} s):")
    browsing = asyncio.gather(
        _browse(chosen.address, listen_s),
        _sniff_mdns(chosen.address, listen_s),
        _listen_beacons(chosen, listen_s),
        return_exceptions=True,
    )
    browsed, sniffed, broadcast = await browsing
    adverts: list[Advert] = []
    if isinstance(browsed, BaseException):
        report.facts["browse_error"] = str(browsed)
    else:
        adverts = browsed
    ours = {c.address for c in candidates}
    mdns_sources = set() if isinstance(sniffed, BaseException) else sniffed - ours
    if isinstance(sniffed, BaseException):
        report.facts["mdns_listen_error"] = str(sniffed)
    if isinstance(broadcast, BaseException):
        broadcast = _Broadcast(error=str(broadcast))
    # A lanchat advert from another address is mDNS from another host too.
    from_others = bool(mdns_sources) or any(a.address not in ours for a in adverts)
    report.facts["multicast_from_others"] = from_others
    report.facts["broadcast"] = broadcast.own_came_back
    report.facts["broadcast_from_others"] = bool(broadcast.others)
    if not broadcast.opened:
        report.facts["broadcast_error"] = broadcast.error
        report.info(f"cannot listen for lanchat's broadcast here: {broadcast.error}")
    elif broadcast.own_came_back:
        report.good("our own broadcast came back: broadcast send and receive work")
    else:
        report.bad(
            "our own broadcast never came back: a firewall on this laptop drops it",
            _BROADCAST_ADVICE,
        )
    firewall_here = not works or (broadcast.opened and not broadcast.own_came_back)
    if from_others:
        report.good(
            "mDNS from other hosts is heard"
            + (f" ({', '.join(sorted(mdns_sources)[:5])})" if mdns_sources else "")
            + ": multicast works between laptops"
        )
    elif broadcast.others:
        report.good("multicast is blocked on this network; lanchat found the others by broadcast")
    if broadcast.others:
        report.good(f"lanchat's broadcast from {len(broadcast.others)} other node(s) is heard")
    if not from_others and not broadcast.others:
        report.facts["peers_reachable"] = False
        report.facts["nodes"] = [a.handle for a in adverts]
        if firewall_here:
            report.info("nothing from any other laptop: see the firewall on this laptop above")
        else:
            report.bad(
                "nothing from any other laptop (neither mDNS nor broadcast)", _ISOLATION_ADVICE
            )
        return report

    report.lines.append("Other lanchat users:")
    known = {a.id_key: a for a in adverts}
    for key, adv in broadcast.others.items():
        known.setdefault(key, adv)
    adverts = sorted(known.values(), key=lambda a: a.handle.casefold())
    report.facts["nodes"] = [a.handle for a in adverts]
    others = [a for a in adverts if a.address not in ours]
    reachable = await asyncio.gather(*(_port_open(a.address, a.router_port) for a in others))
    report.facts["peers_reachable"] = any(reachable)
    if not adverts:
        report.bad(
            "no other lanchat node is visible",
            "If others are running lanchat on this network, the access point may isolate "
            "clients (guest Wi-Fi) or a firewall drops mDNS: ask someone for their address "
            "and start with  lanchat --connect THEIR_IP",
        )
        return report
    rooms: dict[str, list[Advert]] = {}
    for adv in adverts:
        rooms.setdefault(adv.room, []).append(adv)
    for name, members in sorted(rooms.items()):
        brokers = [a for a in members if a.broker_epoch > 0]
        marks = ", ".join(
            a.handle + (" (broker)" if a.broker_epoch else "") + (" (mentor)" if a.mentor else "")
            for a in members
        )
        report.good(f"room {name!r}: {len(members)} node(s): {marks}")
        if not brokers:
            report.info(f"room {name!r}: no broker advertised yet")
    if room is not None and room not in rooms:
        report.info(f"nobody is in room {room!r} yet (you would be its first)")

    report.lines.append("Reaching the brokers:")
    brokers = [a for a in adverts if a.broker_epoch > 0]
    reach = await asyncio.gather(*(_port_open(a.address, a.router_port) for a in brokers))
    for adv, ok in zip(brokers, reach, strict=True):
        where = f"{adv.handle} at {adv.address}:{adv.router_port}"
        if ok:
            report.good(f"broker {where} accepts connections")
        else:
            report.bad(
                f"broker {where} does not accept connections",
                firewall_advice("broker"),
            )
    if others and not any(reachable):
        report.bad(
            "no other lanchat node accepts connections",
            firewall_advice("broker"),
        )
    return report


async def check_install_servers(report: Report, listen_s: float) -> None:
    """Is a `lanchat serve-install` advertised here (DNS-SD `_http._tcp`), and does it answer?

    Information only: a laptop that already has lanchat does not need one, so neither
    outcome changes the verdict.
    """
    from lanchat.installserver import find_install_servers

    address = report.facts.get("address")
    if not isinstance(address, str):
        return
    report.lines.append("Install server (lanchat serve-install, for laptops without lanchat):")
    try:
        servers = await find_install_servers(address, listen_s)
    except OSError as exc:
        report.info(f"could not look for one: {exc}")
        return
    report.facts["install_servers"] = [
        {"name": s.name, "url": s.url, "version": s.version, "reachable": s.reachable}
        for s in servers
    ]
    if not servers:
        report.info("none advertised on this network (a mentor starts one: lanchat serve-install)")
    for server in servers:
        if server.reachable:
            report.good(f"{server.url} serves lanchat {server.version}: open it in a browser")
        else:
            report.info(
                f"{server.url} is advertised but does not answer: a firewall on the mentor's "
                "laptop may block its port"
            )


async def _diagnose_all(args: argparse.Namespace) -> Report:
    report = await diagnose(args.interface, args.room, args.listen)
    await check_install_servers(report, min(args.listen, 1.0))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lanchat doctor", description="Explain why you see nobody on the LAN, and what to do."
    )
    parser.add_argument("--interface", metavar="IP", help="check this address or interface")
    parser.add_argument("--room", metavar="ROOM", help="the room you want to join")
    parser.add_argument(
        "--listen", type=float, default=LISTEN_S, metavar="S", help="how long to listen"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable verdict")
    args = parser.parse_args(argv)
    report = oscompat.run(_diagnose_all(args))
    if args.json:
        print(json.dumps({"ok": report.ok, "advice": report.advice, **report.facts}))
    else:
        print("lanchat doctor")
        print("\n".join(report.lines))
        print()
        if report.ok:
            print("Verdict: everything lanchat needs works here.")
        else:
            print("Verdict: something is wrong. What to do:")
            for advice in report.advice:
                print(f"  - {advice}")
    sys.stdout.flush()
    return 0 if report.ok else 1

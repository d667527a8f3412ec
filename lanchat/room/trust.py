"""Roles by signature: the room's mentor authority as this node knows it (pinned on first
sight or by the room code), our own mentor certificate, the verdict on everyone else's, and
the grant that makes another node a mentor. The rules are ``lanchat.core.authority``."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Final

from lanchat import identity as ident
from lanchat.core import authority as auth
from lanchat.core import wire
from lanchat.core.handles import handle_key
from lanchat.room.context import CommandError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lanchat.room.context import RoomContext

__all__ = ["Trust"]

VERDICTS_MAX: Final = 10_000
# A pin taken on first sight is written this long after (one state-file write less while a
# room of fresh profiles converges); a node that dies before simply pins again next time.
PIN_WRITE_DELAY_S: Final = 2.0
_SEED_BYTES: Final = 32


class Trust:
    def __init__(
        self,
        ctx: RoomContext,
        *,
        send: Callable[[list[bytes]], bool],
        hello_again: Callable[[], None],
        online: Callable[[str], wire.PeerEntry | None],
    ) -> None:
        self._ctx = ctx
        self._send = send  # to our broker
        self._hello_again = hello_again  # our Hello changed (a certificate): tell the broker
        self._online = online  # the roster entry of an online handle
        state, room = ctx.profile.state, ctx.cfg.room
        self._seed_setting = f"authority_seed:{room}"
        self._pin_setting = f"authority:{room}"
        seed = state.get_setting(self._seed_setting)
        pin = state.get_setting(self._pin_setting)
        self.authority: ident.Identity | None = (
            ident.Identity.from_seed(bytes.fromhex(seed)) if isinstance(seed, str) else None
        )
        self.pinned: bytes | None = bytes.fromhex(pin) if isinstance(pin, str) else None
        if self.authority is not None and self.pinned is None:
            self._pin(self.authority.key)
        self.code = auth.normalise_code(ctx.cfg.room_code) if ctx.cfg.room_code else None
        self.cert = b""  # ours, for our Hello
        self._fresh = False  # our authority was created in this run, before seeing the room
        self.refused = False  # our broker said it does not take our certificate
        self._verdicts: dict[tuple[bytes, str, bytes], bool] = {}
        self._warned_conflict: set[bytes] = set()
        self._warned_unverified: set[bytes] = set()

    # ================================================================ ours

    def start(self) -> None:
        """At start-up: a mentor that holds the authority certifies itself for this run; a
        mentor that knows of none (and was given no room code) creates one."""
        if not self._ctx.cfg.mentor:
            return
        if self.authority is not None:
            self._certify_self()
        elif self.pinned is None and self.code is None:
            self._create()

    def _certify_self(self) -> None:
        ctx, authority = self._ctx, self.authority
        assert authority is not None
        self.cert = auth.MentorCert.issue(
            authority.sign,
            authority.key,
            room=ctx.cfg.room,
            handle=ctx.cfg.handle,
            key=ctx.me.key,
            expires=int(ctx.wall()) + auth.CERT_LIFETIME_S,
        ).encode()
        ctx.emit(
            "authority",
            fingerprint=ident.fingerprint(authority.key),
            code=auth.room_code(authority.key),
        )

    def _create(self) -> None:
        """The first mentor of a room: a new authority, kept in the profile."""
        seed = secrets.token_bytes(_SEED_BYTES)
        self._ctx.profile.state.set_setting(self._seed_setting, seed.hex())
        self.authority = ident.Identity.from_seed(seed)
        self._pin(self.authority.key)
        self._certify_self()
        # Until we have seen the room: if it turns out to have an authority already (the
        # broker's, or another mentor's), ours gives way (see observe).
        self._fresh = True

    def _give_way(self, other: bytes) -> None:
        """We created an authority at start, but the room already had one."""
        ctx = self._ctx
        ctx.profile.state.set_setting(self._seed_setting, None)
        self.authority = None
        self.cert = b""
        self._pin(other)
        self._hello_again()
        ctx.emit(
            "warning",
            code="authority_conflict",
            handle=ctx.cfg.handle,
            message=(
                "this room already has a mentor authority "
                f"({ident.fingerprint(other)}, code {auth.room_code(other)}): the code shown "
                "before is not the room's. Ask one of its mentors to add you: "
                f"/mentor add {ctx.cfg.handle}"
            ),
        )

    @property
    def i_am_mentor(self) -> bool:
        """A mentor by certificate of the authority we pinned."""
        return (
            self._ctx.cfg.mentor
            and self.authority is not None
            and self.authority.key == self.pinned
            and bool(self.cert)
        )

    @property
    def known_as_mentor(self) -> bool:
        """A mentor by our certificate, and our broker did not say otherwise."""
        return self.i_am_mentor and not self.refused

    def _pin(self, key: bytes, *, later: bool = False) -> None:
        self.pinned = key
        if not later or self._ctx.spawn(self._write_pin_later(key)) is None:
            self._ctx.profile.state.set_setting(self._pin_setting, key.hex())

    async def _write_pin_later(self, key: bytes) -> None:
        await asyncio.sleep(PIN_WRITE_DELAY_S)
        if self.pinned == key:
            self.save()

    def save(self) -> None:
        """Our pin to the profile, if it is not there yet (also when the node stops)."""
        state, pinned = self._ctx.profile.state, self.pinned
        if pinned is not None and state.get_setting(self._pin_setting) != pinned.hex():
            state.set_setting(self._pin_setting, pinned.hex())

    # ================================================================ theirs

    def _cert_of(self, handle: str, key: bytes, cert: bytes) -> auth.MentorCert | None:
        """A certificate valid under its own authority (whichever it is), cached."""
        ctx = self._ctx
        return auth.check_cert(
            cert, room=ctx.cfg.room, handle=handle, key=key, now=ctx.wall(), verify=ident.verify
        )

    def is_mentor(self, handle: str, key: bytes, cert: bytes, claimed: bool) -> bool:
        """Whether a node that says it is a mentor is one: its certificate is valid and from
        the room's authority as we pinned it."""
        if not claimed or not cert or self.pinned is None:
            return False
        if key == self._ctx.me.key:
            return self.i_am_mentor
        verdict_key = (key, handle_key(handle), cert)
        verdict = self._verdicts.get(verdict_key)
        if verdict is None:
            found = self._cert_of(handle, key, cert)
            verdict = found is not None and found.authority == self.pinned
            if len(self._verdicts) >= VERDICTS_MAX:
                self._verdicts.clear()
            self._verdicts[verdict_key] = verdict
        return verdict

    def hello_is_mentor(self, hello: wire.Hello) -> bool:
        """The relay's question about a client (a broker pins on first sight too)."""
        if hello.mentor and hello.cert and self.pinned is None:
            self._first_sight([(hello.handle, hello.id_key, hello.cert)], broker=None)
        return self.is_mentor(hello.handle, hello.id_key, hello.cert, hello.mentor)

    def observe(self, entries: Iterable[wire.PeerEntry], broker_key: bytes) -> None:
        """A verified roster: pin the authority on first sight (or give way to the room's
        if we created ours before seeing it), warn of other authorities and of mentors
        without a certificate."""
        ctx = self._ctx
        entries = list(entries)
        certified = [(e.handle, e.id_key, e.cert) for e in entries if e.mentor and e.cert]
        broker = next((e for e in entries if e.id_key == broker_key), None)
        broker_cert = (
            self._cert_of(broker.handle, broker.id_key, broker.cert)
            if broker is not None and broker.mentor and broker.cert
            else None
        )
        broker_authority = broker_cert.authority if broker_cert is not None else None
        if self.pinned is None:
            self._first_sight(certified, broker=broker_authority)
        elif self._fresh and any(e.id_key != ctx.me.key for e in entries):
            self._fresh = False
            chosen = self._choose(certified, broker=broker_authority)
            if chosen is not None and chosen != self.pinned:
                self._give_way(chosen)
        for entry in entries:
            if not entry.mentor or entry.id_key == ctx.me.key:
                continue
            if self.is_mentor(entry.handle, entry.id_key, entry.cert, entry.mentor):
                continue
            cert = self._cert_of(entry.handle, entry.id_key, entry.cert) if entry.cert else None
            if cert is not None and cert.authority not in self._warned_conflict:
                self._warned_conflict.add(cert.authority)
                ctx.emit(
                    "warning",
                    code="authority_conflict",
                    handle=entry.handle,
                    message=(
                        f"{entry.handle!r} presents a mentor certificate from another "
                        f"authority ({ident.fingerprint(cert.authority)}) than this room's "
                        f"({ident.fingerprint(self.pinned) if self.pinned else 'none yet'}): "
                        "it is not treated as a mentor"
                    ),
                )
            if entry.id_key not in self._warned_unverified:
                self._warned_unverified.add(entry.id_key)
                ctx.emit(
                    "warning",
                    code="mentor_unverified",
                    handle=entry.handle,
                    message=(
                        f"{entry.handle!r} says it is a mentor but has no valid certificate "
                        "for this room: it is treated as a student"
                    ),
                )

    def _choose(
        self, certified: list[tuple[str, bytes, bytes]], *, broker: bytes | None
    ) -> bytes | None:
        offered: list[bytes] = []
        for handle, key, cert in certified:
            found = self._cert_of(handle, key, cert)
            if found is not None and found.authority not in offered:
                offered.append(found.authority)
        return auth.choose_authority(offered, broker=broker, code=self.code)

    def _first_sight(
        self, certified: list[tuple[str, bytes, bytes]], *, broker: bytes | None
    ) -> None:
        chosen = self._choose(certified, broker=broker)
        if chosen is not None:
            self._pin(chosen, later=True)

    # ================================================================ adding a mentor

    def add_mentor(self, handle: str) -> None:
        ctx = self._ctx
        if not self.i_am_mentor or self.authority is None:
            raise CommandError("not_mentor", "only a verified mentor can add mentors")
        entry = self._online(handle)
        if entry is None:
            raise CommandError("unknown_peer", f"{handle!r} is not online")
        if not entry.mentor:
            raise CommandError(
                "bad_command", f"{entry.handle!r} must be running as a mentor (lanchat --mentor)"
            )
        cert = auth.MentorCert.issue(
            self.authority.sign,
            self.authority.key,
            room=ctx.cfg.room,
            handle=entry.handle,
            key=entry.id_key,
            expires=int(ctx.wall()) + auth.CERT_LIFETIME_S,
        )
        self._fresh = False  # we vouch for others now: ours is the room's
        seed = bytes(self.authority.signing_key)
        box = ctx.me.seal_to(entry.id_key, seed + cert.encode())
        grant = wire.Grant(sender=ctx.me.key, recipient=entry.id_key, box=box)
        if not self._send(wire.encode(grant, ctx.me.sign(wire.signed_bytes(grant)))):
            raise CommandError("not_connected", "not connected to the room yet; try again")

    def on_grant(self, msg: wire.Grant, sig: bytes, sender_is_mentor: bool) -> None:
        """Another mentor made us one: we keep the authority and use its certificate."""
        ctx = self._ctx
        if msg.recipient != ctx.me.key or not ident.verify(msg.sender, wire.signed_bytes(msg), sig):
            ctx.count("grant_bad")
            return
        if not ctx.cfg.mentor or not sender_is_mentor:
            ctx.count("grant_refused")  # only a mentor of this room's authority grants
            return
        try:
            payload = ctx.me.open_from(msg.sender, msg.box)
        except ident.CryptoError:
            ctx.count("grant_bad")
            return
        seed, cert_bytes = payload[:_SEED_BYTES], payload[_SEED_BYTES:]
        if len(seed) != _SEED_BYTES:
            ctx.count("grant_bad")
            return
        authority = ident.Identity.from_seed(seed)
        cert = self._cert_of(ctx.cfg.handle, ctx.me.key, cert_bytes)
        if cert is None or cert.authority != authority.key or authority.key != self.pinned:
            ctx.count("grant_bad")
            return
        if self.i_am_mentor:
            return  # a second grant changes nothing
        ctx.profile.state.set_setting(self._seed_setting, seed.hex())
        self.authority = authority
        self._certify_self()
        self._hello_again()
        ctx.emit("mentor_added", handle=ctx.cfg.handle)

"""Files: offers we make (to a friend or the room) and offers we receive, and the
peer-to-peer file service that serves and fetches them (started on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zmq

from lanchat import identity as ident
from lanchat.core.budget import Budgets
from lanchat.core.files import IncomingOffers
from lanchat.room.context import CommandError

if TYPE_CHECKING:
    from pathlib import Path

    from lanchat.core.files import FileOffer
    from lanchat.files import FileService
    from lanchat.ports import RoomTransport
    from lanchat.room.context import RoomContext
    from lanchat.room.friends import Friendships
    from lanchat.room.peers import Peers
    from lanchat.room.private import PrivateChat
    from lanchat.room.public import PublicRoom

__all__ = ["Offers"]

OFFERS_IN_PER_S = 0.2  # file offers shown per sender (the broker has its own budget)
OFFERS_IN_BURST = 20.0


class Offers:
    def __init__(
        self,
        ctx: RoomContext,
        transport: RoomTransport,
        peers: Peers,
        friends: Friendships,
    ) -> None:
        self._ctx = ctx
        self._transport = transport
        self._peers = peers
        self._friends = friends
        # Wired by the root once the chat parts exist (they also hand offers to us).
        self.private: PrivateChat | None = None
        self.public: PublicRoom | None = None
        self._files: FileService | None = None  # most sessions never move a file
        self._out: dict[str, tuple[FileOffer, bytes | None]] = {}  # id -> (offer, to)
        self._in = IncomingOffers()  # bounded per sender and in all
        self._shown: Budgets[bytes] = Budgets(OFFERS_IN_PER_S, OFFERS_IN_BURST)  # per sender

    def service(self) -> FileService:
        """The file server and downloader, bound and serving from the first use on."""
        if self._files is None:
            from lanchat.files import FileService

            ctx = self._ctx
            files = FileService(
                self._transport.file_context(),
                ctx.cfg.address,
                ctx.me.curve_public,
                ctx.me.curve_secret,
                ctx.profile.directory / "downloads",
                self._emit_file_event,
                self._may_fetch,
                on_fetched=self._fetched,
            )
            try:
                files.start()
            except zmq.ZMQError as exc:  # our LAN address cannot take another socket
                raise CommandError(
                    "file_error", f"cannot open the file service on {ctx.cfg.address}: {exc}"
                ) from exc
            ctx.spawn(files.serve())
            self._files = files
        return self._files

    async def offer(self, path: Path, to: str | None) -> None:
        """``send`` (to a friend) or ``share`` (to the room): hash, register, announce."""
        ctx = self._ctx
        assert self.private is not None
        assert self.public is not None
        key = None
        if to is not None:
            key = self.private.key_for_handle(to)
            if not self._friends.can_message(key):
                ctx.error("not_friends", f"you and {to} are not friends: send a request first")
                return
        from lanchat.files import FileError

        try:
            offer = await self.service().prepare_offer(path.expanduser(), shared=key is None)
        except FileError as exc:
            ctx.error("file_error", str(exc))
            return
        except CommandError as exc:
            ctx.error(exc.code, str(exc))
            return
        self._out[offer.offer_id] = (offer, key)
        if key is not None:
            self.private.send_file_offer(key, offer.to_json())
        else:
            self.public.say_offer(offer)
        ctx.emit("file_offered", id=offer.offer_id, name=offer.name, size=offer.size, to=to)

    def on_offer(self, sender: bytes, handle: str, text: str, shared: bool) -> None:
        from lanchat.core.files import FileOffer, OfferError

        ctx = self._ctx
        try:
            offer = FileOffer.from_json(text)
        except OfferError:
            ctx.count("bad_offer")
            return
        entry = self._peers.online.get(sender)
        # The file must come from the sender's own machine and key: an offer pointing
        # elsewhere would make us fetch from (and hammer) a third party.
        if entry is None or (offer.server_key, offer.address) != (entry.curve_key, entry.address):
            ctx.count("offer_elsewhere")
            return
        if offer.shared != shared:
            ctx.count("bad_offer")
            return
        if not self._shown.take(sender, ctx.clock()):
            ctx.count("offer_budget")
            return
        if not self._in.add(offer, sender):
            ctx.count("offer_repeated")
            return
        ctx.emit(
            "file_offer",
            id=offer.offer_id,
            **{"from": handle},
            name=offer.name,
            size=offer.size,
            sha256=offer.sha256,
            fingerprint=ident.fingerprint(sender),
            shared=shared,
            **{k: v for k, v in self._peers.marks(sender, handle).items() if k != "fingerprint"},
        )

    def accept(self, offer_id: str) -> None:
        known = self._in.get(offer_id)
        if known is None:
            raise CommandError("bad_command", f"no file offer {offer_id!r}")
        self._ctx.spawn(self.service().download(known[0]))

    def decline(self, offer_id: str) -> None:
        if self._in.pop(offer_id) is None:
            raise CommandError("bad_command", f"no file offer {offer_id!r}")
        self.service().decline(offer_id)

    def _may_fetch(self, offer_id: str, curve_key: bytes) -> bool:
        """Whether the peer that authenticated with ``curve_key`` may fetch this offer."""
        known = self._out.get(offer_id)
        if known is None:
            return False
        _offer, to = known
        # By the keys seen in any roster of this session, not only who is online this
        # second: a receiver whose Wi-Fi dropped must be able to resume its download.
        who = self._peers.identity_of_curve.get(curve_key)
        if who is None or self._friends.blocked(who):
            return False
        return to is None or who == to

    def _fetched(self, offer_id: str, curve_key: bytes) -> None:
        """Someone has the whole file we offered, verified: tell our user who."""
        who = self._peers.identity_of_curve.get(curve_key)
        if who is None or offer_id not in self._out:
            return
        self._ctx.emit("file_fetched", id=offer_id, by=self._peers.handle_of(who))

    def _emit_file_event(self, event: dict[str, Any]) -> None:
        fields = dict(event)
        self._ctx.emit(str(fields.pop("ev")), **fields)

    async def close(self) -> None:
        if self._files is not None:
            await self._files.close()

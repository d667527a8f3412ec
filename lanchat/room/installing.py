"""``serve_install``: a mentor's node serves the room's wheelhouse (``lanchat bundle``) as a
package index on the LAN, so laptops without lanchat and without internet install it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lanchat.installserver import InstallServer
    from lanchat.room.context import RoomContext

__all__ = ["InstallService"]


class InstallService:
    def __init__(self, ctx: RoomContext) -> None:
        self._ctx = ctx
        self._server: InstallServer | None = None

    async def start(self, directory: str | None, port: int | None) -> None:
        from lanchat.installserver import DEFAULT_PORT, InstallServerError, start_install_server
        from lanchat.wheelhouse import default_dir

        ctx = self._ctx
        if self._server is None:
            where = Path(directory) if directory else default_dir(ctx.profile.directory)
            try:
                self._server = await start_install_server(
                    where.expanduser(),
                    ctx.cfg.address,
                    DEFAULT_PORT if port is None else port,
                    any_port_if_taken=port is None,
                )
            except (InstallServerError, OSError) as exc:
                ctx.error("install_server", str(exc))
                return
        fields: dict[str, Any] = dict(self._server.event())
        ctx.emit(str(fields.pop("ev")), **fields)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

"""The file protocol between a downloader (DEALER) and a file server (ROUTER).

Wire (all integers big-endian)::

    request  DEALER -> ROUTER   [offer_id: 16 bytes, index: u64]
    reply    ROUTER -> DEALER   [offer_id: 16 bytes, index: u64, status, data]

``status`` is ``ok`` (``data`` is the chunk) or one of ``denied`` / ``unknown`` / ``range`` /
``io`` (``data`` empty).
"""

from __future__ import annotations

from typing import Final

from lanchat.core.files import WINDOW_CHUNKS

_OK: Final = b"ok"
_DENIED: Final = b"denied"
_UNKNOWN: Final = b"unknown"
_RANGE: Final = b"range"
_IO: Final = b"io"
# A request for this chunk index says "fetched whole, and the SHA-256 matched": the server
# tells its user who has the file (``file_fetched``). No chunk has this index.
_FETCHED_INDEX: Final = (1 << 64) - 1
# Server status -> file_failed reason on the receiving side.
_REASONS: Final = {_DENIED: "denied", _UNKNOWN: "withdrawn", _RANGE: "protocol", _IO: "unreadable"}
_OFFER_ID_BYTES: Final = 16
# Frame size limits (see lanchat.transport): the server reads only requests, whose largest
# frame is an offer id. A downloader takes frames up to twice the offer's chunk size, so a
# server that sends more than it offered is caught here and told (too_large) rather than
# cut off silently by libzmq; anything bigger is cut off unread, and the download ends for
# lack of data.
_REQUEST_FRAME_MAX_BYTES: Final = _OFFER_ID_BYTES
_CHUNK_FRAME_FACTOR: Final = 2
# Replies a downloader's socket queues: requests in flight are a window, so more than a few
# windows are unsolicited; with the frame limit this bounds what a server can make us hold.
_DOWNLOAD_RCVHWM: Final = 4 * WINDOW_CHUNKS


def _explain(reason: str, name: str) -> str:
    return {
        "denied": f"the sender of {name} refused us (the offer is not for this key)",
        "withdrawn": f"{name} is no longer offered",
        "unreadable": f"the sender can no longer read {name}",
    }.get(reason, f"the sender of {name} answered something unexpected")

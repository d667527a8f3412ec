"""File transfer adapter: a CURVE file server for our offers and a downloader for others'.

Files go peer to peer, never through the broker. Each node binds one ROUTER (CURVE server,
ZAP domain ``lanchat``) on its LAN address; a receiver connects a DEALER with the sender's
CURVE key from the offer and pulls chunks, keeping ``WINDOW_CHUNKS`` requests in flight.

Wire (all integers big-endian)::

    request  DEALER -> ROUTER   [offer_id: 16 bytes, index: u64]
    reply    ROUTER -> DEALER   [offer_id: 16 bytes, index: u64, status, data]

``status`` is ``ok`` (``data`` is the chunk) or one of ``denied`` / ``unknown`` / ``range`` /
``io`` (``data`` empty). The receiver writes chunks in order to a hidden ``.part`` file, so a
``.part`` is always a verified-length prefix and a later attempt resumes from its size.

The code: `lanchat.files.service` (`FileService`: serving and downloads),
`lanchat.files.fetch` (one download's receiving loop), `lanchat.files.disk` (the blocking
file work, in worker threads), `lanchat.files.wire` (the protocol's constants). Import from
``lanchat.files``.
"""

from __future__ import annotations

from lanchat.files.disk import FileError
from lanchat.files.fetch import RETRY_MAX_FACTOR
from lanchat.files.service import (
    FREE_SPACE_MARGIN_BYTES,
    RETRY_S,
    STALL_TIMEOUT_S,
    FileService,
)
from lanchat.files.service import _Served as _Served  # the tests' fakes name it

__all__ = [
    "FREE_SPACE_MARGIN_BYTES",
    "RETRY_MAX_FACTOR",
    "RETRY_S",
    "STALL_TIMEOUT_S",
    "FileError",
    "FileService",
]

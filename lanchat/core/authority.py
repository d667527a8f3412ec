"""Roles by signature: a room's mentor authority, mentor certificates and room codes. Pure.

The first mentor of a room creates the room's *authority*, an Ed25519 key kept in its
profile. A *mentor certificate* says "the holder of identity key K may act as mentor H in
room R until T", signed by the authority. It travels in the mentor's Hello (and so in every
roster), where anyone can check it; an advert only hints at the mentor role (a TXT record is
too small for a signature, and anyone can forge one).

Everyone pins the room's authority: on first sight (trust on first use), or by the *room
code*, 60 bits of a hash of the authority key that a mentor shows on screen
(``--room-code``). A code is checked offline against any certificate, so it must resist a
student who grinds keys until one matches: 2^60 Ed25519 key generations is far beyond an
afternoon (docs/security.md, "Roles and trust").

Signing and verifying happen outside the core (``lanchat.identity``): callers pass
``verify(key, data, signature)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from lanchat.core.handles import handle_key

__all__ = [
    "CERT_BYTES",
    "CERT_LIFETIME_S",
    "CODE_BITS",
    "CertError",
    "MentorCert",
    "check_cert",
    "choose_authority",
    "claim_payload",
    "code_matches",
    "hand_payload",
    "normalise_code",
    "room_code",
]

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
CERT_BYTES: Final = KEY_BYTES + 8 + SIGNATURE_BYTES
# A mentor that holds the authority issues itself a fresh certificate at every start; one
# added by another mentor gets the authority too (see room/trust.py), so a month is plenty.
CERT_LIFETIME_S: Final = 30 * 24 * 3600
CODE_BITS: Final = 60
_CODE_CHARS: Final = CODE_BITS // 5
# Crockford's base32: no I, L, O, U (a code is read aloud and typed by hand).
_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LOOKALIKES: Final = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CERT_DOMAIN: Final = b"lanchat mentor certificate v1\x00"
_CLAIM_DOMAIN: Final = b"lanchat hand claim v1\x00"
_HAND_DOMAIN: Final = b"lanchat hand v1\x00"
_CODE_DOMAIN: Final = b"lanchat-room"  # BLAKE2b personalisation (at most 16 bytes)

Verify = Callable[[bytes, bytes, bytes], bool]


class CertError(ValueError):
    """Bytes that are not a mentor certificate."""


def _payload(room: str, handle: str, key: bytes, authority: bytes, expires: int) -> bytes:
    # The handle is signed case-folded: the broker holds handles case-insensitively.
    return b"".join(
        (
            _CERT_DOMAIN,
            authority,
            key,
            expires.to_bytes(8, "big"),
            room.encode(),
            b"\x00",
            handle_key(handle).encode(),
        )
    )


@dataclass(frozen=True, slots=True)
class MentorCert:
    """A certificate as carried in a Hello: the room, handle and identity key it speaks for
    are the Hello's own (signed by that key), so only these three fields travel."""

    authority: bytes
    expires: int  # Unix time, whole seconds
    sig: bytes

    def encode(self) -> bytes:
        return self.authority + self.expires.to_bytes(8, "big") + self.sig

    @classmethod
    def decode(cls, data: bytes) -> MentorCert:
        if len(data) != CERT_BYTES:
            raise CertError(f"a mentor certificate is {CERT_BYTES} bytes, got {len(data)}")
        return cls(
            authority=data[:KEY_BYTES],
            expires=int.from_bytes(data[KEY_BYTES : KEY_BYTES + 8], "big"),
            sig=data[KEY_BYTES + 8 :],
        )

    @classmethod
    def issue(
        cls,
        sign: Callable[[bytes], bytes],
        authority: bytes,
        *,
        room: str,
        handle: str,
        key: bytes,
        expires: int,
    ) -> MentorCert:
        """A certificate signed by the authority (``sign`` is the authority's signer)."""
        return cls(authority, expires, sign(_payload(room, handle, key, authority, expires)))

    def valid_for(self, *, room: str, handle: str, key: bytes, now: float, verify: Verify) -> bool:
        """Signed by its own authority for exactly this room, handle and key, not expired.

        Whether that authority is *the room's* is the caller's question (its pin)."""
        if now >= self.expires:
            return False
        data = _payload(room, handle, key, self.authority, self.expires)
        return verify(self.authority, data, self.sig)


def check_cert(
    data: bytes, *, room: str, handle: str, key: bytes, now: float, verify: Verify
) -> MentorCert | None:
    """The certificate in ``data`` if it is well formed and valid for this mentor."""
    if not data:
        return None
    try:
        cert = MentorCert.decode(data)
    except CertError:
        return None
    ok = cert.valid_for(room=room, handle=handle, key=key, now=now, verify=verify)
    return cert if ok else None


def claim_payload(room: str, hand_id: str, eph_key: bytes) -> bytes:
    """What a mentor signs when it claims a hand: the student seals only to a mentor that
    signed this for its hand's own per-hand key (a broker cannot substitute a key)."""
    return _CLAIM_DOMAIN + eph_key + room.encode() + b"\x00" + hand_id.encode()


def hand_payload(room: str, hand_id: str, eph_key: bytes) -> bytes:
    """What a student signs when it raises a hand under its name: the claiming mentor seals
    only to a per-hand key the student signed (a broker cannot substitute one)."""
    return _HAND_DOMAIN + eph_key + room.encode() + b"\x00" + hand_id.encode()


def room_code(authority: bytes) -> str:
    """The room code for an authority key: 60 bits as 12 base32 characters, ``ABCD-EFGH-JKMN``."""
    digest = hashlib.blake2b(authority, digest_size=8, person=_CODE_DOMAIN).digest()
    value = int.from_bytes(digest, "big") >> (64 - CODE_BITS)
    chars = "".join(_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(_CODE_CHARS)))
    return "-".join(chars[i : i + 4] for i in range(0, _CODE_CHARS, 4))


def normalise_code(text: str) -> str | None:
    """A code as typed (any case, spaces or dashes, O for 0, I or L for 1) in its canonical
    form, or None if it cannot be one."""
    raw = "".join(text.split()).replace("-", "").upper().translate(_LOOKALIKES)
    if len(raw) != _CODE_CHARS or any(c not in _ALPHABET for c in raw):
        return None
    return "-".join(raw[i : i + 4] for i in range(0, _CODE_CHARS, 4))


def code_matches(authority: bytes, code: str) -> bool:
    return normalise_code(code) == room_code(authority)


def choose_authority(
    offered: list[bytes], *, broker: bytes | None, code: str | None
) -> bytes | None:
    """The authority to pin on first sight, from the (self-consistent) mentor certificates
    of one roster, in roster order; ``broker`` is the broker's own, if it has one.

    With a room code, only the authority it names. Otherwise the broker's (a room keeps
    its broker: a late node with a certificate from another authority is not it), else
    the first in roster order (succession order: the broker's own view of the room).
    """
    if code is not None:
        return next((a for a in offered if code_matches(a, code)), None)
    if broker is not None and broker in offered:
        return broker
    return offered[0] if offered else None

"""Keys, fingerprints, signatures and end-to-end boxes for one profile.

A profile stores a single secret, a 32-byte Ed25519 seed; every other key is derived from it:

- the Ed25519 signing key, whose public half is *the identity key* (hex: the peer id);
- the X25519 key for NaCl ``Box``, converted from the Ed25519 key, so anyone can derive a
  peer's box key from its identity key alone;
- the ZeroMQ CURVE transport key pair, derived separately (keyed BLAKE2b) so the transport
  key and the end-to-end key are never the same key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from lanchat.oscompat import O_BINARY, fsync_directory, set_mode

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "IDENTITY_FILE",
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "CryptoError",
    "EphemeralKey",
    "Identity",
    "IdentityError",
    "SessionBox",
    "fingerprint",
    "safety_code",
    "session_with_ephemeral",
    "verify",
    "z85_decode",
    "z85_encode",
]

IDENTITY_FILE: Final = "identity.key"
KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
_CURVE_DOMAIN: Final = b"lanchat-curve-v1"
_SAFETY_DOMAIN: Final = b"lanchat-safety1"  # BLAKE2b personalisation: at most 16 bytes


class IdentityError(Exception):
    """The identity key file is missing, unreadable, corrupt or not ours."""


_BOX_CACHE = 1024


class CryptoError(Exception):
    """A box could not be opened (or sealed): wrong key, tampered or truncated data."""


@dataclass(frozen=True, slots=True, repr=False)
class Identity:
    """This profile's keys; ``repr`` shows only the fingerprint, never a secret."""

    signing_key: nacl.signing.SigningKey
    _box_key: nacl.public.PrivateKey = field(init=False, compare=False)
    _curve_secret: bytes = field(init=False, compare=False)
    _curve_public: bytes = field(init=False, compare=False)
    _boxes: dict[bytes, nacl.public.Box] = field(init=False, compare=False)
    _key: bytes = field(init=False, compare=False)  # read for every message we send
    _key_hex: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        key = bytes(self.signing_key.verify_key)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_key_hex", key.hex())
        seed = bytes(self.signing_key)
        # Keyed BLAKE2b, as libsodium's crypto_generichash computes it (same bytes).
        curve_secret = hashlib.blake2b(seed, key=_CURVE_DOMAIN, digest_size=KEY_BYTES).digest()
        object.__setattr__(self, "_box_key", self.signing_key.to_curve25519_private_key())
        object.__setattr__(self, "_boxes", {})
        object.__setattr__(self, "_curve_secret", curve_secret)
        object.__setattr__(
            self, "_curve_public", nacl.bindings.crypto_scalarmult_base(curve_secret)
        )

    def __repr__(self) -> str:
        return f"Identity(fingerprint={self.fingerprint!r})"

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity kept in memory only (tests, benchmarks)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity for a 32-byte seed."""
        if len(seed) != KEY_BYTES:
            raise ValueError(f"an identity seed is {KEY_BYTES} bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def load_or_create(cls, directory: Path) -> Identity:
        """Load ``<directory>/identity.key``, creating it (mode 0600) on first use.

        An existing file is never overwritten: if it is unusable, IdentityError says what to do.
        """
        path = directory / IDENTITY_FILE
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        seed = secrets.token_bytes(KEY_BYTES)
        try:
            _publish_exclusive(path, seed)
        except FileExistsError:
            # Another process on this profile created it first: use theirs.
            return cls._load(path)
        except OSError as exc:
            raise IdentityError(f"cannot create identity key file {path}: {exc}") from exc
        return cls.from_seed(seed)

    @classmethod
    def _load(cls, path: Path) -> Identity:
        try:
            with path.open("rb") as file:
                seed = file.read(KEY_BYTES + 1)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IdentityError(
                f"cannot read identity key file {path}: {exc}; "
                "check its permissions (it should be a regular file, mode 0600)"
            ) from exc
        if len(seed) != KEY_BYTES:
            size = f"{len(seed)} bytes" if len(seed) <= KEY_BYTES else "more than 32 bytes"
            raise IdentityError(
                f"identity key file {path} is corrupt or not a lanchat key "
                f"(expected exactly {KEY_BYTES} bytes, found {size}); it was left untouched. "
                "Restore it from a backup, or move it aside to start with a new identity "
                "(friends will then see a key-change warning)."
            )
        return cls.from_seed(seed)

    @property
    def key(self) -> bytes:
        """The 32-byte Ed25519 public key: this peer's identity."""
        return self._key

    @property
    def key_hex(self) -> str:
        return self._key_hex

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    @property
    def box_public(self) -> bytes:
        """The X25519 public key peers derive from :attr:`key` to seal boxes to us."""
        return bytes(self._box_key.public_key)

    @property
    def curve_public(self) -> bytes:
        return self._curve_public

    @property
    def curve_secret(self) -> bytes:
        return self._curve_secret

    @property
    def curve_public_z85(self) -> bytes:
        return z85_encode(self._curve_public)

    @property
    def curve_secret_z85(self) -> bytes:
        return z85_encode(self._curve_secret)

    def _box_with(self, peer_key: bytes) -> nacl.public.Box:
        """The Box with one peer, cached: deriving it costs an X25519 multiplication and
        a key conversion (~100 µs), the encryption itself a few µs."""
        box = self._boxes.get(peer_key)
        if box is None:
            box = nacl.public.Box(self._box_key, _box_public_of(peer_key))
            if len(self._boxes) >= _BOX_CACHE:
                self._boxes.pop(next(iter(self._boxes)))
            self._boxes[peer_key] = box
        return box

    def sign(self, data: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature of ``data``."""
        return bytes(self.signing_key.sign(data).signature)

    def seal_to(self, recipient_key: bytes, plaintext: bytes) -> bytes:
        """Encrypt and authenticate for the peer with identity ``recipient_key``.

        Returns nonce + ciphertext.
        """
        return bytes(self._box_with(recipient_key).encrypt(plaintext))

    def open_from(self, sender_key: bytes, box: bytes) -> bytes:
        """Decrypt a box sealed to us by the peer with identity ``sender_key``."""
        try:
            return bytes(self._box_with(sender_key).decrypt(box))
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise CryptoError("cannot open box: wrong sender key, or tampered data") from exc


class SessionBox:
    """A NaCl Box between one X25519 secret and one peer public key (either direction).

    Used for help sessions: the student's side is a fresh per-hand key, so an anonymous
    student's identity never enters the exchange.
    """

    def __init__(self, secret: nacl.public.PrivateKey, peer_public: nacl.public.PublicKey) -> None:
        self._box = nacl.public.Box(secret, peer_public)

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._box.encrypt(plaintext))

    def open(self, data: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(data))
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise CryptoError("cannot open box: wrong key, or tampered data") from exc


class EphemeralKey:
    """A throw-away X25519 key pair (one per raised hand)."""

    def __init__(self) -> None:
        self._secret = nacl.public.PrivateKey.generate()

    @property
    def public(self) -> bytes:
        return bytes(self._secret.public_key)

    def session_with_identity(self, identity_key: bytes) -> SessionBox:
        """A box with the peer whose Ed25519 identity key is ``identity_key``."""
        return SessionBox(self._secret, _box_public_of(identity_key))


def session_with_ephemeral(me: Identity, ephemeral_public: bytes) -> SessionBox:
    """Our (identity) side of a box with a peer's ephemeral X25519 key."""
    try:
        peer = nacl.public.PublicKey(ephemeral_public)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoError("not a valid X25519 key") from exc
    return SessionBox(me._box_key, peer)


def _box_public_of(key: bytes) -> nacl.public.PublicKey:
    try:
        return nacl.signing.VerifyKey(key).to_curve25519_public_key()
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoError("not a valid identity key") from exc


def _publish_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` (mode 0600) unless it exists; never partially written.

    The data goes to a temporary O_EXCL file first and is fsynced; ``os.link`` then publishes it
    atomically and fails if ``path`` exists, so a concurrent loader never sees a short file.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | O_BINARY
    fd = os.open(temp, flags, 0o600)
    try:
        try:
            set_mode(fd, temp, 0o600)  # the umask can only narrow it; make it exact
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def verify(key: bytes, data: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``key``'s signature of ``data``; False for any bad input."""
    try:
        if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        nacl.signing.VerifyKey(bytes(key)).verify(bytes(data), bytes(signature))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def fingerprint(key: bytes) -> str:
    """First 10 bytes of BLAKE2b-512(key) as 5 hex groups: ``a1b2-c3d4-e5f6-0718-293a``."""
    digest = hashlib.blake2b(key).hexdigest()[:20]
    return "-".join(digest[i : i + 4] for i in range(0, 20, 4))


def safety_code(a: bytes, b: bytes) -> str:
    """The code two peers compare out of band: same for (a, b) and (b, a), e.g. ``01234 56789 ...``.

    Six groups of five digits, each from 5 bytes of a BLAKE2b hash of both keys in sorted order
    (40 bits mod 100000 has a negligible bias).
    """
    if len(a) != KEY_BYTES or len(b) != KEY_BYTES:
        raise ValueError(f"identity keys are {KEY_BYTES} bytes")
    low, high = sorted((a, b))
    digest = hashlib.blake2b(low + high, digest_size=30, person=_SAFETY_DOMAIN).digest()
    groups = (int.from_bytes(digest[i : i + 5], "big") % 100_000 for i in range(0, 30, 5))
    return " ".join(f"{group:05d}" for group in groups)


_Z85_ALPHABET: Final = (
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_VALUES: Final = {char: value for value, char in enumerate(_Z85_ALPHABET)}


def z85_encode(data: bytes) -> bytes:
    """Z85 (ZeroMQ RFC 32) text for ``data``, whose length must be a multiple of 4."""
    if len(data) % 4:
        raise ValueError(f"Z85 encodes multiples of 4 bytes, got {len(data)}")
    out = bytearray()
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i : i + 4], "big")
        out += bytes(_Z85_ALPHABET[value // 85**power % 85] for power in range(4, -1, -1))
    return bytes(out)


def z85_decode(text: bytes | str) -> bytes:
    """The bytes of Z85 ``text``, whose length must be a multiple of 5."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) % 5:
        raise ValueError(f"Z85 decodes multiples of 5 characters, got {len(raw)}")
    out = bytearray()
    for i in range(0, len(raw), 5):
        value = 0
        for char in raw[i : i + 5]:
            if char not in _Z85_VALUES:
                raise ValueError(f"not a Z85 character: {chr(char)!r}")
            value = value * 85 + _Z85_VALUES[char]
        if value > 0xFFFFFFFF:
            raise ValueError(f"Z85 group out of range: {raw[i : i + 5]!r}")
        out += value.to_bytes(4, "big")
    return bytes(out)

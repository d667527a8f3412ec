from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import nacl.bindings
import nacl.signing
import pytest

from lanchat import oscompat
from lanchat.identity import (
    IDENTITY_FILE,
    CryptoError,
    Identity,
    IdentityError,
    fingerprint,
    safety_code,
    verify,
    z85_decode,
    z85_encode,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def bob() -> Identity:
    return Identity.generate()


def test_load_or_create_twice_gives_the_same_key(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path)
    second = Identity.load_or_create(tmp_path)
    assert first.key == second.key
    assert first == second
    assert first.curve_secret == second.curve_secret
    assert sorted(p.name for p in tmp_path.iterdir()) == [IDENTITY_FILE]  # no temp files left


def test_key_file_is_private_and_holds_only_the_seed(tmp_path: Path) -> None:
    identity = Identity.load_or_create(tmp_path)
    path = tmp_path / IDENTITY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == (0o600 if oscompat.POSIX_PERMISSIONS else 0o666)
    assert nacl.signing.SigningKey(path.read_bytes()).verify_key.encode() == identity.key


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01" * 31, b"\x01" * 33, b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"x" * 200],
)
def test_corrupt_key_file_is_an_error_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / IDENTITY_FILE
    path.write_bytes(content)
    with pytest.raises(IdentityError) as info:
        Identity.load_or_create(tmp_path)
    assert str(path) in str(info.value)
    assert "move it aside" in str(info.value)
    assert path.read_bytes() == content


def test_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).mkdir()
    with pytest.raises(IdentityError, match="cannot read"):
        Identity.load_or_create(tmp_path)


def test_repr_shows_no_secret(alice: Identity) -> None:
    text = repr(alice)
    assert text == f"Identity(fingerprint={alice.fingerprint!r})"
    for secret in (bytes(alice.signing_key), alice.curve_secret):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_key_forms(alice: Identity) -> None:
    assert len(alice.key) == 32
    assert alice.key_hex == alice.key.hex()
    assert alice.fingerprint == fingerprint(alice.key)
    groups = alice.fingerprint.split("-")
    assert [len(group) for group in groups] == [4] * 5
    assert all(int(group, 16) >= 0 for group in groups)


def test_sign_and_verify(alice: Identity, bob: Identity) -> None:
    signature = alice.sign(b"hello")
    assert len(signature) == 64
    assert verify(alice.key, b"hello", signature)
    assert not verify(alice.key, b"hellO", signature)
    assert not verify(bob.key, b"hello", signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify(alice.key, b"hello", tampered)


@pytest.mark.parametrize(
    ("key", "signature"),
    [
        (b"\xff" * 32, bytes(64)),  # not a valid curve point
        (b"\x01" * 5, bytes(64)),
        (b"", bytes(64)),
        (None, bytes(64)),
        (b"\x01" * 32, b"short"),
        (b"\x01" * 32, None),
    ],
)
def test_verify_never_raises(key: bytes, signature: bytes) -> None:
    assert not verify(key, b"data", signature)


def test_seal_and_open(alice: Identity, bob: Identity) -> None:
    box = alice.seal_to(bob.key, b"secret")
    assert b"secret" not in box
    assert bob.open_from(alice.key, box) == b"secret"
    assert alice.open_from(bob.key, bob.seal_to(alice.key, b"")) == b""


def test_open_failures_raise_crypto_error(alice: Identity, bob: Identity) -> None:
    carol = Identity.generate()
    box = alice.seal_to(bob.key, b"secret")
    with pytest.raises(CryptoError):
        bob.open_from(carol.key, box)
    with pytest.raises(CryptoError):
        carol.open_from(alice.key, box)
    with pytest.raises(CryptoError):
        bob.open_from(alice.key, box[:-1] + bytes([box[-1] ^ 1]))
    with pytest.raises(CryptoError):
        bob.open_from(alice.key, box[:10])
    with pytest.raises(CryptoError):
        bob.open_from(b"\xff" * 32, box)
    with pytest.raises(CryptoError):
        alice.seal_to(b"\x01" * 5, b"x")


def test_safety_code_is_symmetric(alice: Identity, bob: Identity) -> None:
    code = safety_code(alice.key, bob.key)
    assert code == safety_code(bob.key, alice.key)
    groups = code.split(" ")
    assert [len(group) for group in groups] == [5] * 6
    assert all(group.isdigit() for group in groups)
    assert code != safety_code(alice.key, Identity.generate().key)
    with pytest.raises(ValueError, match="32 bytes"):
        safety_code(alice.key, b"short")


def test_curve_keys_are_deterministic_and_separate_from_the_box_key() -> None:
    seed = bytes(range(32))
    one, two = Identity.from_seed(seed), Identity.from_seed(seed)
    assert one.curve_secret == two.curve_secret
    assert one.curve_public == two.curve_public
    assert one.curve_public == nacl.bindings.crypto_scalarmult_base(one.curve_secret)
    assert one.curve_public != one.box_public
    assert one.curve_secret != bytes(one.signing_key.to_curve25519_private_key())
    assert len(one.curve_public_z85) == len(one.curve_secret_z85) == 40
    assert z85_decode(one.curve_public_z85) == one.curve_public
    assert z85_decode(one.curve_secret_z85) == one.curve_secret


def test_box_public_is_derivable_from_the_identity_key(alice: Identity) -> None:
    derived = nacl.signing.VerifyKey(alice.key).to_curve25519_public_key()
    assert bytes(derived) == alice.box_public


def test_z85_rfc32_vector() -> None:
    raw = bytes([0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
    assert z85_encode(raw) == b"HelloWorld"
    assert z85_decode(b"HelloWorld") == raw
    assert z85_decode("HelloWorld") == raw


def test_z85_round_trip_and_errors() -> None:
    data = bytes(range(256)) * 4
    assert z85_decode(z85_encode(data)) == data
    assert z85_encode(b"\xff" * 4) == b"%nSc0"
    with pytest.raises(ValueError, match="multiples of 4"):
        z85_encode(b"abc")
    with pytest.raises(ValueError, match="multiples of 5"):
        z85_decode(b"abcd")
    with pytest.raises(ValueError, match="not a Z85 character"):
        z85_decode(b"abc~d")
    with pytest.raises(ValueError, match="out of range"):
        z85_decode(b"#####")


def test_the_curve_key_derivation_never_changes() -> None:
    # Keyed BLAKE2b of the seed (libsodium's crypto_generichash and hashlib agree): a
    # profile keeps its transport key across versions.
    one = Identity.from_seed(bytes(range(32)))
    assert one.curve_secret.hex() == (
        "ce97a5c876467569588b198aefcda699846e5f1df851a7cd945dba801a959585"
    )
    assert one.curve_public.hex() == (
        "3dfdfed55676fca88d869c3ca4a414a25437faf55938b6dd43201cb24724715f"
    )

"""A wheelhouse on disk: a flat folder of wheels plus SHA256SUMS, shared by bundle and server.

SHA256SUMS (``<hex>  <filename>`` per line, as sha256sum writes it) records each wheel's hash
when it was fetched and verified, so a later run or the server notices a file that changed.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import TYPE_CHECKING, Final

from lanchat.core.installindex import WheelFile, parse_wheel_name

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "MANIFEST",
    "Scan",
    "default_dir",
    "read_manifest",
    "scan",
    "sha256_file",
    "verify_wheel",
    "write_manifest",
]

MANIFEST: Final = "SHA256SUMS"
WHEELHOUSE_DIR: Final = "wheelhouse"
_CHUNK = 1 << 20


def default_dir(profile: Path | None) -> Path:
    """The wheelhouse of a profile (the default profile when None)."""
    if profile is None:
        from lanchat.store import default_profile_dir

        profile = default_profile_dir()
    return profile / WHEELHOUSE_DIR


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, str]:
    """filename -> sha256 from SHA256SUMS (empty if there is none)."""
    try:
        text = (directory / MANIFEST).read_text()
    except FileNotFoundError:
        return {}
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name and len(digest) == 64:
            sums[name.strip()] = digest
    return sums


def write_manifest(directory: Path, sums: dict[str, str]) -> None:
    tmp = directory / f"{MANIFEST}.tmp"
    tmp.write_text("".join(f"{sums[name]}  {name}\n" for name in sorted(sums)))
    tmp.replace(directory / MANIFEST)


def _dist_info(names: list[str]) -> str | None:
    found = {n.split("/", 1)[0] for n in names if n.count("/") == 1}
    infos = [d for d in found if d.endswith(".dist-info")]
    return infos[0] if len(infos) == 1 else None


def verify_wheel(path: Path) -> str | None:
    """Check every file in the wheel against its RECORD; None if intact, else what is wrong.

    This proves the archive is whole and as its builder made it (a truncated download or a
    flipped bit fails here); that it is the file the index published, pip checked when it
    downloaded it (against the index's sha256).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            info = _dist_info(names)
            if info is None:
                return "no single .dist-info folder"
            record = zf.read(f"{info}/RECORD").decode()
            listed: dict[str, str] = {}
            for line in record.splitlines():
                # path,sha256=<urlsafe b64, no padding>,size; paths may be quoted (csv)
                fields = line.rsplit(",", 2)
                if len(fields) == 3:
                    listed[fields[0].strip('"')] = fields[1]
            for name in names:
                if name.endswith("/") or name == f"{info}/RECORD":
                    continue
                want = listed.get(name)
                if want is None:
                    return f"{name} is not in RECORD"
                algo, _, expected = want.partition("=")
                if algo != "sha256":
                    return f"{name}: unsupported hash {algo!r} in RECORD"
                got = base64.urlsafe_b64encode(hashlib.sha256(zf.read(name)).digest())
                if got.rstrip(b"=").decode() != expected:
                    return f"{name} does not match its RECORD hash"
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"
    return None


def requires_python(path: Path) -> str:
    """The wheel's Requires-Python ("" if none or unreadable)."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = _dist_info(zf.namelist())
            if info is None:
                return ""
            meta = HeaderParser().parsestr(zf.read(f"{info}/METADATA").decode())
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        return ""
    return (meta.get("Requires-Python") or "").strip()


@dataclass(frozen=True, slots=True)
class Scan:
    """What a wheelhouse offers, and files it will not serve (with why)."""

    files: list[WheelFile]
    refused: dict[str, str]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def scan(directory: Path) -> Scan:
    """Every wheel in `directory` whose hash matches SHA256SUMS (when it lists the file)."""
    sums = read_manifest(directory)
    files: list[WheelFile] = []
    refused: dict[str, str] = {}
    for path in sorted(directory.glob("*.whl")):
        if parse_wheel_name(path.name) is None:
            refused[path.name] = "not a wheel file name"
            continue
        digest = sha256_file(path)
        if path.name in sums and sums[path.name] != digest:
            refused[path.name] = "changed since it was bundled (hash differs from SHA256SUMS)"
            continue
        files.append(WheelFile(path.name, digest, path.stat().st_size, requires_python(path)))
    return Scan(files, refused)

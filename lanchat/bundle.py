"""`lanchat bundle`: gather lanchat and every dependency as wheels, for a room without internet.

Run while online. For each platform a workshop meets and each supported Python, `pip download`
fetches the wheels (pip checks each against the index's sha256) into one flat wheelhouse that
`lanchat serve-install` serves. lanchat's own wheel is built here from the running package, so
a mentor who installed lanchat from a wheel (no checkout) can bundle too.

`--from-installed` needs no network at all: it repacks the installed dependencies into wheels,
for laptops with this machine's OS, architecture and Python.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Final

import lanchat
from lanchat import __version__
from lanchat.core.installindex import parse_wheel_name
from lanchat.core.units import human_size
from lanchat.wheelhouse import default_dir, read_manifest, sha256_file, verify_wheel, write_manifest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "PLATFORMS",
    "PYTHONS",
    "BundleResult",
    "Platform",
    "Target",
    "build_lanchat_wheel",
    "bundle",
    "main",
    "pip_download_argv",
    "repack_installed",
]


@dataclass(frozen=True, slots=True)
class Platform:
    """A system a workshop meets, as pip platform tags, best (most compatible) first."""

    key: str
    label: str
    os: str  # "windows" | "macos" | "linux" | "local"
    pip_platforms: tuple[str, ...]


def _manylinux(arch: str) -> tuple[str, ...]:
    # Oldest glibc first: pip prefers the earlier tag, so a laptop with an old distribution
    # gets a wheel it can load; the newer tags catch packages that ship nothing older.
    return (
        f"manylinux2014_{arch}",
        f"manylinux_2_17_{arch}",
        *(f"manylinux_2_{v}_{arch}" for v in (24, 26, 28, 31, 34)),
    )


def _macos(arch: str, versions: Sequence[str]) -> tuple[str, ...]:
    # pip widens each macOS tag to the older releases (and universal2) itself.
    return tuple(f"macosx_{v}_{arch}" for v in versions)


PLATFORMS: Final = {
    p.key: p
    for p in (
        Platform("windows-x86_64", "Windows x86_64", "windows", ("win_amd64",)),
        Platform(
            "macos-arm64", "macOS arm64", "macos", _macos("arm64", ("11_0", "12_0", "13_0", "14_0"))
        ),
        Platform(
            "macos-x86_64",
            "macOS x86_64",
            "macos",
            _macos("x86_64", ("10_9", "10_13", "11_0", "12_0")),
        ),
        Platform("linux-x86_64", "Linux x86_64", "linux", _manylinux("x86_64")),
        Platform("linux-aarch64", "Linux aarch64", "linux", _manylinux("aarch64")),
    )
}
LOCAL: Final = Platform("local", "this machine", "local", ())
ANY: Final = Platform("any", "any system", "any", ())  # pure-Python wheels: pip itself
PYTHONS: Final = ("3.11", "3.12", "3.13", "3.14")
# Requirements a platform needs that pip cannot see from here: pip evaluates environment
# markers (sys_platform == "win32") for the machine it runs on, not for --platform. None of
# lanchat's dependencies has such a marker today (prompt_toolkit drives the Windows console
# through ctypes, no colorama); `platform_marker_gaps` warns if one appears.
OS_EXTRAS: Final[dict[str, tuple[str, ...]]] = {"windows": (), "macos": (), "linux": ()}
_OS_MARKERS = re.compile(r"\b(sys_platform|platform_system|os_name)\b")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"\bextra\s*==")
_DIST_INFO_SKIP = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same package gives the same bytes every time


@dataclass(frozen=True, slots=True)
class Target:
    platform: Platform
    python: str | None  # None: this interpreter

    @property
    def label(self) -> str:
        python = self.python or f"{sys.version_info.major}.{sys.version_info.minor}"
        return f"{self.platform.label}, Python {python}"


@dataclass(slots=True)
class BundleResult:
    directory: Path
    files: dict[str, int] = field(default_factory=dict)  # filename -> size
    new: list[str] = field(default_factory=list)
    per_target: dict[str, int] = field(default_factory=dict)  # label -> bytes it needs
    missing: dict[str, str] = field(default_factory=dict)  # label -> what pip could not find
    corrupt: list[str] = field(default_factory=list)  # removed: failed their hash check
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(self.files.values())


# ---- wheels built here ----------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _write_wheel(path: Path, entries: Iterable[tuple[str, bytes]], dist_info: str) -> None:
    """Write a wheel from (archive path, bytes) pairs, adding RECORD; atomic, deterministic."""
    records = []
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            records.append(f"{name},{_record_hash(data)},{len(data)}\n")
        records.append(f"{dist_info}/RECORD,,\n")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", _ZIP_TIME)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, "".join(records))
    tmp.replace(path)


def _checkout_metadata(root: Path) -> tuple[str, str] | None:
    """METADATA and entry_points.txt from a checkout's pyproject.toml, or None if not one."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return None
    if project.get("name") != "lanchat":
        return None
    lines = [
        "Metadata-Version: 2.1",
        "Name: lanchat",
        f"Version: {__version__}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.11')}",
        *(f"Requires-Dist: {req}" for req in project.get("dependencies", [])),
    ]
    scripts = project.get("scripts", {})
    entry_points = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
    return "\n".join(lines) + "\n", entry_points


def _lanchat_metadata() -> tuple[str, str]:
    package = Path(lanchat.__file__).resolve().parent
    found = _checkout_metadata(package.parent)
    if found is not None:
        return found
    dist = metadata.distribution("lanchat")
    if dist.version != __version__:
        raise RuntimeError(f"installed lanchat {dist.version} is not the running {__version__}")
    return dist.read_text("METADATA") or "", dist.read_text("entry_points.txt") or ""


def build_lanchat_wheel(dest: Path) -> Path:
    """lanchat-<version>-py3-none-any.whl from the running package (a checkout or an install)."""
    package = Path(lanchat.__file__).resolve().parent
    meta, entry_points = _lanchat_metadata()
    dist_info = f"lanchat-{__version__}.dist-info"
    entries = [
        (f"lanchat/{path.relative_to(package).as_posix()}", path.read_bytes())
        for path in package.rglob("*")
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed")
    ]
    wheel_meta = "Wheel-Version: 1.0\nGenerator: lanchat bundle\nRoot-Is-Purelib: true\n"
    entries += [
        (f"{dist_info}/METADATA", meta.encode()),
        (f"{dist_info}/WHEEL", (wheel_meta + "Tag: py3-none-any\n").encode()),
        (f"{dist_info}/entry_points.txt", entry_points.encode()),
    ]
    path = dest / f"lanchat-{__version__}-py3-none-any.whl"
    _write_wheel(path, entries, dist_info)
    return path


def _compressed_tag(tags: list[str]) -> str:
    """The file-name tag for a set of tags: `a-b-c.d` when they are a product, else the first."""
    parts = [tag.split("-") for tag in tags]
    pys, abis, plats = (list(dict.fromkeys(p[i] for p in parts)) for i in range(3))
    if len(pys) * len(abis) * len(plats) == len(set(tags)):
        return f"{'.'.join(pys)}-{'.'.join(abis)}-{'.'.join(plats)}"
    return tags[0]


def repack_installed(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed distribution, from its RECORD (the files pip put there).

    Scripts and data installed outside site-packages are left out: console scripts come
    back from entry_points.txt, and none of lanchat's dependencies installs other data.
    """
    files = dist.files
    wheel_text = dist.read_text("WHEEL")
    if files is None or wheel_text is None:
        raise RuntimeError(f"{dist.metadata['Name']} has no RECORD or WHEEL: cannot repack it")
    tags = HeaderParser().parsestr(wheel_text).get_all("Tag") or []
    if not tags:
        raise RuntimeError(f"{dist.metadata['Name']}: WHEEL lists no tag")
    dist_info = next(
        (f.parent.name for f in files if f.name == "METADATA" and f.parent.suffix == ".dist-info"),
        None,
    )
    if dist_info is None:
        raise RuntimeError(f"{dist.metadata['Name']}: no .dist-info in RECORD")
    entries = []
    for f in files:
        posix = f.as_posix()
        if posix.startswith(("..", "/")) or "__pycache__" in f.parts or f.suffix == ".pyc":
            continue
        if f.parent.name == dist_info and f.name in _DIST_INFO_SKIP:
            continue
        entries.append((posix, Path(str(f.locate())).read_bytes()))
    project = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    path = dest / f"{project}-{dist.version}-{_compressed_tag(tags)}.whl"
    _write_wheel(path, entries, dist_info)
    return path


def _requirements() -> list[str]:
    meta, _ = _lanchat_metadata()
    return HeaderParser().parsestr(meta).get_all("Requires-Dist") or []


def installed_closure(requirements: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions `requirements` need here, transitively.

    Markers are not evaluated: a requirement that is not installed is one pip decided this
    machine does not need (a PyPy-only or old-Python one); extras are never followed.
    """
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name_match = _REQ_NAME.match(req)
        if name_match is None or _EXTRA_MARKER.search(req.partition(";")[2]):
            continue
        key = re.sub(r"[-_.]+", "-", name_match[1]).lower()
        if key in found:
            continue
        try:
            dist = metadata.distribution(name_match[1])
        except metadata.PackageNotFoundError:
            continue
        found[key] = dist
        todo.extend(dist.requires or [])
    return [found[k] for k in sorted(found)]


# ---- downloads -------------------------------------------------------------------------


def pip_download_argv(target: Target, dest: Path, requirements: Sequence[str]) -> list[str]:
    """The `pip download` for one target: binary wheels only, for that platform and Python."""
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
    ]
    if target.platform is ANY:
        return [*argv, "--no-deps", *requirements]
    for tag in target.platform.pip_platforms:
        argv += ["--platform", tag]
    if target.python is not None:
        nodot = target.python.replace(".", "")
        argv += ["--python-version", target.python, "--implementation", "cp"]
        argv += ["--abi", f"cp{nodot}"]
    return [*argv, *requirements, *OS_EXTRAS.get(target.platform.os, ())]


_SAVED = re.compile(r"^(?:Saved|File was already downloaded) (.+\.whl)\s*$")
_MISSING = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the "
    r"requirement) (\S+)"
)


@dataclass(frozen=True, slots=True)
class PipOutcome:
    wheels: list[str]  # file names this target uses
    missing: str | None  # None on success


def parse_pip_output(returncode: int, output: str) -> PipOutcome:
    wheels = [Path(m[1]).name for line in output.splitlines() if (m := _SAVED.match(line.strip()))]
    if returncode == 0:
        return PipOutcome(wheels, None)
    found = _MISSING.search(output)
    if found:
        return PipOutcome(wheels, f"no wheel of {found[1]}")
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    return PipOutcome(wheels, errors[-1] if errors else f"pip failed (exit {returncode})")


def _run_pip(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


def platform_marker_gaps(directory: Path) -> list[str]:
    """Requirements with an OS marker whose project is not in the wheelhouse (see OS_EXTRAS)."""
    have = {p.project for f in directory.glob("*.whl") if (p := parse_wheel_name(f.name))}
    gaps = []
    for wheel in sorted(directory.glob("*.whl")):
        try:
            with zipfile.ZipFile(wheel) as zf:
                meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
                meta = HeaderParser().parsestr(zf.read(meta_name).decode())
        except (OSError, zipfile.BadZipFile, StopIteration, UnicodeDecodeError):
            continue
        for req in meta.get_all("Requires-Dist") or []:
            marker = req.partition(";")[2]
            name = _REQ_NAME.match(req)
            if name is None or not _OS_MARKERS.search(marker) or _EXTRA_MARKER.search(marker):
                continue
            if re.sub(r"[-_.]+", "-", name[1]).lower() not in have:
                gaps.append(f"{wheel.name} needs {req.strip()}: add it to OS_EXTRAS")
    return gaps


def _check_house(directory: Path, result: BundleResult) -> dict[str, str]:
    """Drop files that no longer match SHA256SUMS; return the sums that still hold."""
    sums = read_manifest(directory)
    kept = {}
    for name, digest in sums.items():
        path = directory / name
        if not path.exists():
            continue
        if sha256_file(path) != digest:
            path.unlink()
            result.corrupt.append(f"{name} (changed on disk; fetched again)")
            continue
        kept[name] = digest
    return kept


def _seal(directory: Path, sums: dict[str, str], result: BundleResult) -> None:
    """Verify every wheel not yet in SHA256SUMS against its RECORD, then record it."""
    for path in sorted(directory.glob("*.whl")):
        if path.name in sums:
            continue
        problem = verify_wheel(path)
        if problem is not None:
            path.unlink()
            result.corrupt.append(f"{path.name} ({problem}; removed)")
            continue
        sums[path.name] = sha256_file(path)
    write_manifest(directory, sums)
    result.files = {name: (directory / name).stat().st_size for name in sorted(sums)}


def bundle(
    directory: Path,
    targets: Sequence[Target],
    *,
    from_installed: bool = False,
    run: Callable[[list[str]], tuple[int, str]] = _run_pip,
    progress: Callable[[str], None] = print,
) -> BundleResult:
    """Fill `directory` for `targets` (or from what is installed here); incremental."""
    directory.mkdir(parents=True, exist_ok=True)
    result = BundleResult(directory)
    sums = _check_house(directory, result)
    before = set(sums)
    own = build_lanchat_wheel(directory)
    if own.name in sums and sha256_file(own) != sums[own.name]:
        del sums[own.name]  # the code changed under the same version: the new build counts
    if from_installed:
        # pip too: the server hands it to laptops whose Python has none (see PIP_WHEEL_PATH).
        dists = installed_closure([*_requirements(), "pip"])
        progress(f"repacking {len(dists)} installed distributions for this machine")
        made = [own]
        for dist in dists:
            try:
                made.append(repack_installed(dist, directory))
            except (RuntimeError, OSError) as exc:
                result.missing["this machine"] = str(exc)
        label = Target(LOCAL, None).label
        result.per_target[label] = sum(p.stat().st_size for p in made)
    else:
        for i, target in enumerate(targets, 1):
            progress(f"[{i}/{len(targets)}] {target.label}: downloading")
            code, output = run(pip_download_argv(target, directory, [str(own)]))
            outcome = parse_pip_output(code, output)
            if outcome.missing is not None:
                result.missing[target.label] = outcome.missing
                progress(f"      missing: {outcome.missing} (the others are not affected)")
            sizes = [
                (directory / w).stat().st_size for w in outcome.wheels if (directory / w).exists()
            ]
            result.per_target[target.label] = sum(sizes)
            progress(f"      {len(outcome.wheels)} wheels, {human_size(sum(sizes))}")
        progress("[pip] pip itself, for laptops whose Python has no pip")
        code, output = run(pip_download_argv(Target(ANY, None), directory, ["pip"]))
        outcome = parse_pip_output(code, output)
        if outcome.missing is not None:
            result.missing["pip"] = outcome.missing
    _seal(directory, sums, result)
    result.new = sorted(set(result.files) - before)
    result.warnings = platform_marker_gaps(directory)
    return result


def targets_for(platforms: Sequence[str], pythons: Sequence[str]) -> list[Target]:
    if "local" in platforms:
        return [Target(LOCAL, None)]
    return [Target(PLATFORMS[p], py) for p in platforms for py in pythons]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lanchat bundle",
        description="Download lanchat and everything it needs as wheels for the laptops of a "
        "workshop (run while online), for `lanchat serve-install` to hand out offline.",
    )
    parser.add_argument(
        "--dir", type=Path, metavar="DIR", help="the wheelhouse (default: the profile's)"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile holding the wheelhouse"
    )
    parser.add_argument(
        "--platform",
        action="append",
        choices=[*PLATFORMS, "local"],
        help="only this platform (repeatable; default: all; local: this machine only)",
    )
    parser.add_argument(
        "--python",
        action="append",
        choices=PYTHONS,
        help=f"only this Python version (repeatable; default: {', '.join(PYTHONS)})",
    )
    parser.add_argument(
        "--from-installed",
        action="store_true",
        help="no network: repack what is installed here (for laptops like this one)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir or default_dir(args.profile)
    targets = targets_for(args.platform or list(PLATFORMS), args.python or list(PYTHONS))
    print(f"lanchat bundle: wheelhouse {directory}", flush=True)
    result = bundle(
        directory,
        targets,
        from_installed=args.from_installed,
        progress=lambda line: print(line, flush=True),
    )
    for line in result.corrupt:
        print(f"hash check failed: {line}")
    for label, what in result.missing.items():
        print(f"missing for {label}: {what}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(
        f"{len(result.files)} wheels, {human_size(result.size)} in all ({len(result.new)} new); "
        f"every file verified (SHA256SUMS)."
    )
    print(f"Serve it with: lanchat serve-install --dir {directory}")
    return 0

"""`lanchat bundle`: wheels built here, repacked wheels, pip's command lines, incremental runs."""

from __future__ import annotations

import shutil
import zipfile
from importlib import metadata
from typing import TYPE_CHECKING

from lanchat import __version__
from lanchat.bundle import (
    PLATFORMS,
    Target,
    build_lanchat_wheel,
    bundle,
    parse_pip_output,
    pip_download_argv,
    platform_marker_gaps,
    repack_installed,
    targets_for,
)
from lanchat.cli import main as cli_main
from lanchat.wheelhouse import read_manifest, sha256_file, verify_wheel

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def _read(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(suffix))
        return zf.read(name).decode()


def test_lanchat_wheel_is_complete_verified_and_reproducible(tmp_path: Path) -> None:
    first = build_lanchat_wheel(tmp_path)
    assert first.name == f"lanchat-{__version__}-py3-none-any.whl"
    assert verify_wheel(first) is None
    with zipfile.ZipFile(first) as zf:
        names = set(zf.namelist())
    assert {"lanchat/cli.py", "lanchat/py.typed", "lanchat/core/installindex.py"} <= names
    assert not any("__pycache__" in n for n in names)
    meta = _read(first, ".dist-info/METADATA")
    assert "Requires-Dist: pyzmq>=26" in meta
    assert "Requires-Python: >=3.11" in meta
    assert "lanchat = lanchat.cli:main" in _read(first, ".dist-info/entry_points.txt")
    digest = sha256_file(first)
    assert sha256_file(build_lanchat_wheel(tmp_path)) == digest  # same code, same bytes


def test_repacked_installed_wheel_verifies_and_keeps_its_tags(tmp_path: Path) -> None:
    dist = metadata.distribution("pyzmq")
    wheel = repack_installed(dist, tmp_path)
    assert wheel.name.startswith(f"pyzmq-{dist.version}-cp3")
    assert verify_wheel(wheel) is None
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "zmq/__init__.py" in names
    assert not any(n.endswith(("INSTALLER", "direct_url.json", ".pyc")) for n in names)


def test_verify_wheel_catches_a_changed_file(tmp_path: Path) -> None:
    good = build_lanchat_wheel(tmp_path)
    bad = tmp_path / "bad" / good.name
    bad.parent.mkdir()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"# changed" if item.filename == "lanchat/cli.py" else data)
    assert verify_wheel(bad) == "lanchat/cli.py does not match its RECORD hash"
    bad.write_bytes(good.read_bytes()[:1000])
    assert (verify_wheel(bad) or "").startswith("unreadable")


def test_pip_download_argv_names_platform_python_and_abi(tmp_path: Path) -> None:
    argv = pip_download_argv(Target(PLATFORMS["windows-x86_64"], "3.12"), tmp_path, ["x.whl"])
    assert argv[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in argv
    text = " ".join(argv)
    assert "--platform win_amd64 --python-version 3.12 --implementation cp --abi cp312" in text
    assert argv[-1] == "x.whl"
    linux = pip_download_argv(Target(PLATFORMS["linux-aarch64"], "3.11"), tmp_path, [])
    platforms = [linux[i + 1] for i, a in enumerate(linux) if a == "--platform"]
    assert platforms[0] == "manylinux2014_aarch64"  # the oldest glibc is preferred
    assert all(p.endswith("_aarch64") for p in platforms)


def test_targets() -> None:
    every = targets_for(list(PLATFORMS), ["3.11", "3.12", "3.13"])
    assert len(every) == 15
    assert [t.python for t in targets_for(["local"], ["3.12"])] == [None]


def test_parse_pip_output() -> None:
    ok = parse_pip_output(
        0,
        "Saved ./d/tinydb-4.9.0-py3-none-any.whl\n"
        "File was already downloaded /w/pyzmq-27.3.0-cp312-abi3-win_amd64.whl\n"
        "Successfully downloaded tinydb pyzmq\n",
    )
    assert ok.wheels == ["tinydb-4.9.0-py3-none-any.whl", "pyzmq-27.3.0-cp312-abi3-win_amd64.whl"]
    assert ok.missing is None
    failed = parse_pip_output(
        1,
        "ERROR: Could not find a version that satisfies the requirement pyzmq>=26 (from "
        "lanchat) (from versions: none)\nERROR: No matching distribution found for pyzmq>=26\n",
    )
    assert failed.missing == "no wheel of pyzmq>=26"
    assert parse_pip_output(2, "ERROR: network down\n").missing == "ERROR: network down"


def test_bundle_is_incremental_reports_missing_and_refetches_changed_files(
    tmp_path: Path,
) -> None:
    """pip is replaced by a double that 'downloads' a real wheel (or fails for Python 3.13)."""
    source = tmp_path / "source"
    source.mkdir()
    tinydb = repack_installed(metadata.distribution("tinydb"), source)
    house = tmp_path / "house"
    calls: list[list[str]] = []

    def fake_pip(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        if "3.13" in argv:
            return 1, "ERROR: No matching distribution found for pyzmq\n"
        target = house / tinydb.name
        if target.exists():
            return 0, f"File was already downloaded {target}\n"
        shutil.copy(tinydb, target)
        return 0, f"Saved {target}\n"

    targets = [Target(PLATFORMS["linux-x86_64"], v) for v in ("3.12", "3.13")]
    lines: list[str] = []
    first = bundle(house, targets, run=fake_pip, progress=lines.append)
    assert sorted(first.new) == sorted([tinydb.name, f"lanchat-{__version__}-py3-none-any.whl"])
    assert first.missing == {"Linux x86_64, Python 3.13": "no wheel of pyzmq"}
    assert first.per_target["Linux x86_64, Python 3.12"] == tinydb.stat().st_size
    assert set(read_manifest(house)) == set(first.files)
    assert any(line.startswith("[2/2] Linux x86_64, Python 3.13") for line in lines)

    second = bundle(house, targets, run=fake_pip, progress=lines.append)
    assert second.new == []
    assert second.corrupt == []

    (house / tinydb.name).write_bytes(b"not what was fetched")
    third = bundle(house, targets, run=fake_pip, progress=lines.append)
    assert third.corrupt == [f"{tinydb.name} (changed on disk; fetched again)"]
    assert sha256_file(house / tinydb.name) == sha256_file(tinydb)
    assert len(calls) == 9  # two targets and pip itself, per run
    assert calls[2][-2:] == ["--no-deps", "pip"]


def test_os_specific_requirements_missing_from_the_house_are_reported(tmp_path: Path) -> None:
    build_lanchat_wheel(tmp_path)
    dist_info = "tool-1.0.dist-info"
    meta = (
        "Metadata-Version: 2.1\nName: tool\nVersion: 1.0\n"
        'Requires-Dist: colorama; sys_platform == "win32"\n'
        'Requires-Dist: pytest; extra == "test" and sys_platform == "win32"\n'
        "Requires-Dist: lanchat\n"
    )
    with zipfile.ZipFile(tmp_path / "tool-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{dist_info}/METADATA", meta)
    gaps = platform_marker_gaps(tmp_path)
    assert gaps == [
        'tool-1.0-py3-none-any.whl needs colorama; sys_platform == "win32": add it to OS_EXTRAS'
    ]


def test_cli_bundles_from_installed_and_serve_install_refuses_an_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    house = tmp_path / "house"
    assert cli_main(["bundle", "--from-installed", "--dir", str(house)]) == 0
    out = capsys.readouterr().out
    assert "every file verified (SHA256SUMS)" in out
    assert f"Serve it with: lanchat serve-install --dir {house}" in out
    names = set(read_manifest(house))
    assert {n.split("-")[0] for n in names} >= {"lanchat", "pyzmq", "zeroconf", "pynacl", "pip"}
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["serve-install", "--dir", str(empty), "--interface", "127.0.0.1", "--port", "0"]
    assert cli_main(argv) == 1
    assert "no lanchat wheel" in capsys.readouterr().err

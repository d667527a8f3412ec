from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lanchat

FORBIDDEN = ("zmq", "zeroconf", "tinydb", "prompt_toolkit", "nacl", "asyncio")

# Runs in a fresh interpreter so modules imported by other tests cannot mask a leak.
_PROBE = """
import importlib, json, pkgutil, sys
sys.path.insert(0, {root!r})
import lanchat.core
names = ["lanchat.core"]
for info in pkgutil.walk_packages(lanchat.core.__path__, "lanchat.core."):
    importlib.import_module(info.name)
    names.append(info.name)
forbidden = {forbidden!r}
leaked = sorted({{name.split(".")[0] for name in sys.modules}} & set(forbidden))
print(json.dumps({{"imported": names, "leaked": leaked}}))
"""


def test_core_imports_only_the_standard_library() -> None:
    root = Path(lanchat.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE.format(root=str(root), forbidden=FORBIDDEN)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"lanchat.core.handles", "lanchat.core.friendship", "lanchat.core.text"} <= set(
        report["imported"]
    )
    assert report["leaked"] == [], f"the core imported {report['leaked']}"

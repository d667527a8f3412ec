#!/usr/bin/env python3
"""A FAQ bot for the public room, driving `lanchat --headless` over JSON lines.

    python3 examples/faq_bot.py --handle faqbot [--room R] [--profile DIR]
                                [--interface IP] [--connect HOST[:PORT]] [--faq FILE ...]

It starts its own node (``python -m lanchat --headless``), reads `public` events and
answers questions it knows in the public room. A message gets an answer when it looks like
a question (it has a "?" or starts with what/where/when/how/...) and contains every keyword
of an entry. A keyword matches the start of a word, case-insensitively ("slide" matches
"Slides"); "a|b" accepts either. Only the first matching entry answers.

Built in: the Wi-Fi password, the slides, lunch, asking privately. ``--faq FILE`` (may be
repeated) adds entries from a JSON file holding one entry or a list of them, checked
before the built-in ones, so they can override them::

    [{"keywords": ["wifi|wi-fi", "password"], "answer": "It is hunter2, on network 'lab'."},
     {"keywords": ["exam"], "answer": "The exam is on Friday at 10:00 in room 101."}]

The bot never answers itself, answers the same question text at most once every 30 s,
logs what it does to stderr, and quits cleanly (the node says goodbye) on Ctrl-C, SIGTERM
or when the node exits; its exit status is the node's.

Only the standard library is used: the headless JSON-lines contract (docs/headless.md)
is the whole interface.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

RATE_LIMIT_S = 30.0
MAX_TEXT = 4000  # the node refuses longer messages
QUIT_GRACE_S = 10.0
QUESTION_WORDS = frozenset(
    {"what", "who", "where", "when", "why", "how", "which", "is", "are", "can", "could"}
    | {"does", "do", "did", "will", "any", "anyone", "anybody", "should", "may"}
)

BUILTIN_FAQ: list[dict[str, Any]] = [
    {
        "keywords": ["wifi|wi-fi|wlan|wireless|network|internet", "password|passphrase|passwd"],
        "answer": "The Wi-Fi password is on the whiteboard by the entrance "
        "(ask a mentor if you cannot see it).",
    },
    {
        "keywords": ["slide|deck|presentation"],
        "answer": "The slides are linked on the workshop page and shown again at the end; "
        "a mentor can send you the link.",
    },
    {
        "keywords": ["lunch|food|meal"],
        "answer": "Lunch is at 12:30 in the foyer, for about an hour.",
    },
    {
        "keywords": ["private|anonymous|secret|dm|direct message"],
        "answer": "To ask a mentor privately: /hand --anon YOUR TOPIC puts you in the help "
        "queue under a pseudonym (leave out --anon to show your name), and the mentor who "
        "claims it chats with you alone. To chat privately with anyone: /request THEIR_HANDLE; "
        "once they /accept, /msg THEIR_HANDLE text is end-to-end encrypted.",
    },
]


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} faqbot: {message}", file=sys.stderr, flush=True)


# ---- the FAQ table ----------------------------------------------------------


@dataclass
class Entry:
    keywords: list[str]
    answer: str
    patterns: list[re.Pattern[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.patterns = [
            re.compile(
                "|".join(rf"(?<!\w){re.escape(alt.strip())}" for alt in kw.split("|")),
                re.IGNORECASE,
            )
            for kw in self.keywords
        ]

    def matches(self, text: str) -> bool:
        return all(p.search(text) for p in self.patterns)


def make_entry(raw: object, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: an entry must be an object with 'keywords' and 'answer'")
    keywords, answer = raw.get("keywords"), raw.get("answer")
    if (
        not isinstance(keywords, list)
        or not keywords
        or not all(isinstance(k, str) and k.strip(" |") for k in keywords)
    ):
        raise ValueError(f"{where}: 'keywords' must be a non-empty list of non-empty strings")
    if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_TEXT:
        raise ValueError(f"{where}: 'answer' must be a non-empty string of at most {MAX_TEXT}")
    alts = [[a for a in k.split("|") if a.strip()] for k in keywords]
    return Entry(["|".join(a) for a in alts], answer.strip())


def load_faq(path: Path) -> list[Entry]:
    """Entries from a JSON file holding one {"keywords": [...], "answer": "..."} or a list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    items = data if isinstance(data, list) else [data]
    return [make_entry(item, f"{path} entry {i}") for i, item in enumerate(items, start=1)]


def looks_like_question(text: str) -> bool:
    words = re.findall(r"\w+", text.casefold())
    return "?" in text or (bool(words) and words[0] in QUESTION_WORDS)


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


class FaqBot:
    """The decisions, without any I/O: which message gets which answer, and when."""

    def __init__(self, handle: str, entries: list[Entry], rate_limit_s: float = RATE_LIMIT_S):
        self.handle = handle
        self.entries = entries
        self.rate_limit_s = rate_limit_s
        self.last_answered: dict[str, float] = {}  # normalised question -> monotonic time

    def answer_for(self, sender: str, text: str, now: float) -> str | None:
        if sender.casefold() == self.handle.casefold():
            return None  # never our own (the node does not echo them anyway)
        if not looks_like_question(text):
            return None
        entry = next((e for e in self.entries if e.matches(text)), None)
        if entry is None:
            return None
        key = normalise(text)
        last = self.last_answered.get(key)
        if last is not None and now - last < self.rate_limit_s:
            log(f"not answering {text!r} again so soon ({now - last:.0f} s ago)")
            return None
        self.last_answered[key] = now
        # Forget old entries so the table cannot grow without bound.
        for old in [k for k, t in self.last_answered.items() if now - t >= self.rate_limit_s]:
            del self.last_answered[old]
        return entry.answer


# ---- the headless node ------------------------------------------------------


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


class HeadlessNode:
    """A `lanchat --headless` child: commands in, events out (read by a thread)."""

    def __init__(self, argv: list[str]) -> None:
        # Own session: a Ctrl-C in the terminal reaches only us, and we tell the node.
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, start_new_session=True
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                with contextlib.suppress(ValueError):
                    event = json.loads(raw)
                    if isinstance(event, dict):
                        self.events.put(event)
        finally:
            self.events.put(None)  # EOF: the node exited

    def send(self, **cmd: Any) -> bool:
        assert self.proc.stdin is not None
        line = memoryview((json.dumps(cmd) + "\n").encode())
        # Signals held off meanwhile: a Stop must not leave half a line in the pipe.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            while line:
                line = line[self.proc.stdin.write(line) or 0 :]
        except (BrokenPipeError, OSError, ValueError):
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return True

    def quit(self) -> int:
        """Ask the node to quit; wait for it (killing it if it hangs); its exit status."""
        self.send(cmd="quit")
        try:
            return self.proc.wait(timeout=QUIT_GRACE_S)
        except subprocess.TimeoutExpired:
            log("the node did not quit in time; killing it")
            self.proc.kill()
            return self.proc.wait()


def node_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "lanchat", "--headless", "--handle", args.handle]
    for flag in ("room", "profile", "interface", "connect"):
        value = getattr(args, flag)
        if value:
            argv += [f"--{flag}", str(value)]
    return argv


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace, entries: list[Entry]) -> int:
    bot = FaqBot(args.handle, entries)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    node = HeadlessNode(node_argv(args))
    log(f"started lanchat (PID {node.proc.pid}) with {len(entries)} FAQ entries")
    try:
        while (event := node.events.get()) is not None:
            handle_event(node, bot, event)
    except Stop as why:
        # A second signal now ends the bot at once; its node then sees EOF and quits too.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log(f"{why}: quitting")
    status = node.quit()
    log(f"the node exited with status {status}")
    return status


def handle_event(node: HeadlessNode, bot: FaqBot, event: dict[str, Any]) -> None:
    kind = event.get("ev")
    if kind == "ready":
        bot.handle = str(event.get("handle") or bot.handle)
        log(f"ready as {bot.handle} ({event.get('fingerprint')})")
    elif kind == "broker":
        log(f"connected to broker {event.get('handle')}")
    elif kind in ("error", "warning"):
        log(f"{kind} {event.get('code')}: {event.get('message')}")
    elif kind == "public":
        sender, text = str(event.get("from", "")), str(event.get("text", ""))
        answer = bot.answer_for(sender, text, time.monotonic())
        if answer is not None:
            log(f"answering {sender}: {text!r}")
            node.send(cmd="say", text=f"@{sender} {answer}"[:MAX_TEXT])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--handle", default="faqbot", help="the bot's handle (default: faqbot)")
    p.add_argument("--room", help="join this room instead of the default one")
    p.add_argument("--profile", help="profile directory (default: lanchat's)")
    p.add_argument("--interface", metavar="IP", help="the network interface to use")
    p.add_argument("--connect", metavar="HOST[:PORT]", help="connect to this broker directly")
    p.add_argument(
        "--faq", action="append", type=Path, default=[], help="JSON file of extra entries"
    )
    args = p.parse_args(argv)
    try:
        entries = [e for path in args.faq for e in load_faq(path)]
    except ValueError as exc:
        p.error(str(exc))
    entries += [make_entry(raw, "built-in") for raw in BUILTIN_FAQ]
    return run(args, entries)


if __name__ == "__main__":
    raise SystemExit(main())

"""Tab completion of /commands and of what follows them: handles, paths, fixed words, numbers
and ids (and of @mentions)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from lanchat.core.handles import handle_key
from lanchat.ui.commands import COMMANDS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prompt_toolkit.completion import CompleteEvent

    from lanchat.ui.model import ViewModel

__all__ = ["ChatCompleter"]

_SPECS = {spec.name: spec for spec in COMMANDS}


class ChatCompleter(Completer):
    """Completes from the view model, so the candidates are always current."""

    def __init__(self, model: ViewModel) -> None:
        self.model = model
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        before = document.text_before_cursor
        words = before.split(" ")
        if before.startswith("/") and len(words) == 1:
            typed = words[0].lower()
            for spec in COMMANDS:
                if spec.name.startswith(typed):
                    yield Completion(spec.name, -len(typed), display_meta=spec.summary)
            return
        if before.startswith("/"):
            yield from self._arguments(before, words, complete_event)
            return
        if words[-1].startswith("@"):
            typed = words[-1][1:]
            online = [p.handle for p in self.model.peers.values() if p.online]
            for completion in _handles(sorted(online, key=handle_key), typed):
                yield Completion("@" + completion.text, completion.start_position - 1)

    def _arguments(
        self, before: str, words: list[str], complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        name = words[0].lower()
        spec = _SPECS.get(name)
        if spec is None:
            return
        args = words[1:]
        handles = 1 if spec.handle_arg else 0
        if spec.path_arg and len(args) > handles:
            path = before.split(" ", 1 + handles)[1 + handles]
            for completion in self._paths.get_completions(Document(path), complete_event):
                yield _native_separator(completion)
            return
        typed = args[-1]
        if spec.handle_arg and len(args) == 1:
            yield from _handles(self.model.handle_candidates(name), typed)
        elif len(args) <= len(spec.choices):
            for word in spec.choices[len(args) - 1]:
                if word.startswith(typed.lower()):
                    yield Completion(word, -len(typed))
        elif len(args) == 1:
            for word, meta in self.model.id_candidates(name):
                if word.startswith(typed.lower()):
                    yield Completion(word, -len(typed), display_meta=meta)


def _native_separator(completion: Completion) -> Completion:
    """prompt_toolkit shows a directory as "name/"; Windows users see and type "name\\"."""
    shown = completion.display_text
    if os.sep == "/" or not shown.endswith("/"):
        return completion
    return Completion(
        completion.text,
        completion.start_position,
        display=shown[:-1] + os.sep,
        display_meta=completion.display_meta,
    )


def _handles(candidates: Iterable[str], typed: str) -> Iterable[Completion]:
    prefix = handle_key(typed)
    for handle in candidates:
        if handle_key(handle).startswith(prefix):
            yield Completion(handle, -len(typed))

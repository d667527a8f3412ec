"""Tab completion of /commands and of the handles that follow them (and of @mentions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prompt_toolkit.completion import Completer, Completion

from lanchat.core.handles import handle_key
from lanchat.ui.commands import COMMANDS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from lanchat.ui.model import ViewModel

__all__ = ["ChatCompleter"]

_HANDLE_COMMANDS = {spec.name for spec in COMMANDS if spec.handle_arg}


class ChatCompleter(Completer):
    """Completes from the view model, so the candidates are always current."""

    def __init__(self, model: ViewModel) -> None:
        self.model = model

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
        if before.startswith("/") and len(words) == 2 and words[0].lower() in _HANDLE_COMMANDS:
            yield from _handles(self.model.handle_candidates(words[0].lower()), words[1])
            return
        if not before.startswith("/") and words[-1].startswith("@"):
            typed = words[-1][1:]
            online = [p.handle for p in self.model.peers.values() if p.online]
            for completion in _handles(sorted(online, key=handle_key), typed):
                yield Completion("@" + completion.text, completion.start_position - 1)


def _handles(candidates: Iterable[str], typed: str) -> Iterable[Completion]:
    prefix = handle_key(typed)
    for handle in candidates:
        if handle_key(handle).startswith(prefix):
            yield Completion(handle, -len(typed))

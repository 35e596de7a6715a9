"""Token ids to streamed text: deltas that never split a character, hold back what a stop string may still
cut, and report rewinds (FASB dropping tokens) as the characters taken back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Piece", "TextStream", "cut_at_stop"]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string in it, and whether one was found (as :func:`steerlab.generate`)."""
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


@dataclass(frozen=True)
class Piece:
    """One streamed change: ``text`` appended, after taking back ``rewind`` characters (``dropped`` is the text
    taken back); ``gate`` the PSR gate of the last token in ``text``, when known."""

    text: str = ""
    rewind: int = 0
    dropped: str = ""
    gate: float | None = None


class TextStream:
    """The text of a growing (or rewound) token list, streamed as :class:`Piece` objects.

    ``push(tokens)`` takes the row's whole token list so far and returns the change since the last call;
    ``finish(tokens)`` returns the rest (stop strings cut). Text is held back while it ends in an incomplete
    character or could still be the start of a stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.sent = ""

    def text_of(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    def _change(self, target: str, gate: float | None) -> Piece | None:
        if target == self.sent:
            return None
        common = 0
        limit = min(len(target), len(self.sent))
        while common < limit and target[common] == self.sent[common]:
            common += 1
        dropped = self.sent[common:]
        piece = Piece(target[common:], len(dropped), dropped, gate)
        self.sent = target
        return piece

    def push(self, tokens: Sequence[int], gate: float | None = None) -> Piece | None:
        text = self.text_of(tokens)
        text, _ = cut_at_stop(text, self.stops)
        while text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            text = text[:-1]
        hold = max((len(s) - 1 for s in self.stops), default=0)
        if hold:
            keep = len(text)
            for n in range(1, hold + 1):  # the longest tail that starts some stop string
                if any(s.startswith(text[-n:]) for s in self.stops) and n <= len(text):
                    keep = len(text) - n
            text = text[:keep]
        return self._change(text, gate)

    def finish(self, tokens: Sequence[int]) -> tuple[str, Piece | None]:
        """The final text (stop strings cut) and the last change to stream."""
        text, _ = cut_at_stop(self.text_of(tokens), self.stops)
        return text, self._change(text, None)

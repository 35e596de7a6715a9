"""The one progress bar: a rich bar on stderr (so piped stdout stays clean), or a no-op.

Every long loop uses :class:`ProgressBar`: capture, log-likelihood scoring, the eval runner,
embeddings (per batch, across the chunks of a resumable run) and generation (per token).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

__all__ = ["ProgressBar", "progress_for"]


class _Speed(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


class ProgressBar:
    """``total`` steps of ``unit`` under ``label`` (``initial`` already done, e.g. on resume); a no-op
    when ``enabled`` is False. Use as a context manager and call :meth:`advance`."""

    def __init__(self, total: int, enabled: bool = True, label: str = "", unit: str = "items",
                 initial: int = 0, transient: bool = False) -> None:
        self.enabled = bool(enabled)
        self.total = int(total)
        self.completed = int(initial)  # counted whether or not the bar is shown
        self._bar: Progress | None = None
        self._task: Any = None
        if self.enabled:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Speed(unit),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True, highlight=False), transient=transient)
            self._task = self._bar.add_task(label, total=total, completed=initial)

    def __enter__(self) -> "ProgressBar":
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def describe(self, label: str) -> None:
        """Change the label (e.g. which batch of prompts is generating)."""
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def reset(self, total: int) -> None:
        """Start over with a new ``total`` (a new batch)."""
        self.total, self.completed = int(total), 0
        if self._bar is not None:
            self._bar.reset(self._task, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def progress_for(show: "bool | ProgressBar | None", total: int, label: str, unit: str = "items", *,
                 transient: bool = False, reset: bool = False) -> Iterator[ProgressBar]:
    """The bar a loop advances: the caller's own :class:`ProgressBar` when ``show`` is one (a bar over a larger
    job; ``reset``: start it over at ``total``), else a new bar of ``total`` steps shown when ``show`` is true."""
    if isinstance(show, ProgressBar):
        if reset:
            show.reset(total)
        yield show
        return
    with ProgressBar(total, bool(show), label, unit, transient=transient) as bar:
        yield bar

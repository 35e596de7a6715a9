"""The server's threads and limits.

One thread steps the :class:`~steerlab.batching.BatchEngine` (plain and vector-steered requests, batched
continuously); one worker thread runs FASB and PSR requests one at a time, each through
:func:`steerlab.generate` with its monitor or gated intervention (hooks act only in the thread that installed
them, so both threads share the model safely). Every accepted request ends with exactly one final update:
finished, cancelled, timed out, failed, or failed at shutdown: none is dropped silently.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..batching import BatchEngine, RowEvent, RowRequest
from ..models import LoadedModel

__all__ = ["Limits", "Update", "Overloaded", "ShuttingDown", "Cancelled", "Ticket", "Scheduler"]


@dataclass(frozen=True)
class Limits:
    """Server limits: tokens per request, prompt length, rows decoded together, requests waiting beyond the
    running ones (more get 429), seconds a request may take (then it ends with ``"timeout"``), seconds a
    shutdown waits for accepted requests before failing the rest."""

    max_tokens: int = 512
    max_prompt_tokens: int = 2048
    max_batch: int = 16
    max_queue: int = 64
    timeout_s: float = 300.0
    shutdown_grace_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_prompt_tokens", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max-queue must be >= 0, got {self.max_queue}")
        if not self.timeout_s > 0 or not self.shutdown_grace_s >= 0:
            raise ValueError("timeout must be > 0 and shutdown grace >= 0 seconds")


@dataclass(frozen=True)
class Update:
    """What a request's handler receives: the row's token ids so far (``tokens``; FASB may shorten them), the
    PSR gate of the newest token, or the end (``finish`` set; ``error`` its message; ``extra`` method details
    such as FASB's decisions)."""

    tokens: tuple[int, ...] = ()
    gate: float | None = None
    finish: str | None = None
    error: str | None = None
    extra: dict[str, Any] | None = None


class Overloaded(RuntimeError):
    """The queue is full (HTTP 429)."""


class ShuttingDown(RuntimeError):
    """The server is shutting down and accepts nothing new (HTTP 503)."""


class Cancelled(Exception):
    """Raised inside a FASB / PSR run when its request was cancelled, ran late or the server shuts down."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Sink = Callable[[Update], None]


class Ticket:
    """An accepted request: :meth:`cancel` it (client gone); ``done`` once its final update was sent."""

    def __init__(self, scheduler: "Scheduler", sink: Sink, deadline: float) -> None:
        self._scheduler = scheduler
        self._sink = sink
        self.deadline = deadline
        self.rid: int | None = None
        self.cancelled = False
        self.done = False
        self._lock = threading.Lock()

    def send(self, update: Update) -> None:
        with self._lock:
            if self.done:
                return
            if update.finish is not None:
                self.done = True
        try:
            self._sink(update)
        except RuntimeError:  # the handler's event loop is closed: nobody is listening any more
            pass
        if update.finish is not None:
            self._scheduler._release()

    def cancel(self) -> None:
        self.cancelled = True
        if self.rid is not None:
            self._scheduler.engine.cancel(self.rid)

    def check(self) -> None:
        """For FASB / PSR runs: raise :class:`Cancelled` when this request should stop."""
        if self.cancelled:
            raise Cancelled("cancelled")
        if self._scheduler._failing:
            raise Cancelled("shutdown")
        if time.monotonic() > self.deadline:
            raise Cancelled("timeout")


class Scheduler:
    """Owns the engine thread and the FASB / PSR worker; admits requests within :class:`Limits`.

    ``gather_s``: when a request wakes an idle engine, it waits this long for others sent at the same moment,
    so that they share one prefill pass."""

    def __init__(self, lm: LoadedModel, limits: Limits | None = None, gather_s: float = 0.005) -> None:
        self.lm = lm
        self.gather_s = gather_s
        self.limits = limits or Limits()
        self.engine = BatchEngine(lm, max_batch=self.limits.max_batch, max_join=self.limits.max_batch)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._accepting = False
        self._failing = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._jobs: queue.Queue[tuple[Ticket, Callable[[Ticket], Update]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def start(self) -> "Scheduler":
        self._accepting = True
        self._threads = [threading.Thread(target=self._engine_loop, name="steerlab-engine", daemon=True),
                         threading.Thread(target=self._worker_loop, name="steerlab-worker", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _admit(self, sink: Sink) -> Ticket:
        with self._lock:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down: no new requests")
            capacity = self.limits.max_batch + self.limits.max_queue
            if self._in_flight >= capacity:
                raise Overloaded(f"server busy: {self._in_flight} requests in flight (limit {capacity}); retry later")
            self._in_flight += 1
        return Ticket(self, sink, time.monotonic() + self.limits.timeout_s)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def submit_row(self, req: RowRequest, sink: Sink) -> Ticket:
        """A plain or vector-steered generation, batched continuously; raises Overloaded / ShuttingDown."""
        ticket = self._admit(sink)
        req.deadline = ticket.deadline
        tokens: list[int] = []

        def on_event(ev: RowEvent) -> None:
            if ev.token is not None:
                tokens.append(ev.token)
                ticket.send(Update(tuple(tokens)))
            if ev.finish is not None:
                ticket.send(Update(tuple(tokens), finish=ev.finish, error=ev.error))

        ticket.rid = self.engine.submit(req, on_event)
        if ticket.cancelled:
            self.engine.cancel(ticket.rid)
        self._wake.set()
        return ticket

    def submit_job(self, run: Callable[[Ticket], Update], sink: Sink) -> Ticket:
        """A FASB / PSR generation on the worker thread: ``run(ticket)`` sends its own token updates, calls
        ``ticket.check()`` between steps and returns the final update."""
        ticket = self._admit(sink)
        self._jobs.put((ticket, run))
        return ticket

    # --- threads ---------------------------------------------------------------------------------------

    def _engine_loop(self) -> None:
        while not self._stop.is_set():
            if self._failing:
                self.engine.fail_all("shutdown", "the server shut down before this request finished")
            if self.engine.idle:
                if self._wake.wait(0.05):
                    self._wake.clear()
                    time.sleep(self.gather_s)  # requests sent together start together: one prefill, not several
                continue
            try:
                self.engine.step()
            except Exception as exc:  # noqa: BLE001 - a bug must not leave accepted requests waiting forever
                self.engine.fail_all("error", f"{type(exc).__name__}: {exc}")
        self.engine.fail_all("shutdown", "the server shut down before this request finished")

    def _worker_loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            ticket, run = item
            try:
                ticket.check()
                final = run(ticket)
            except Cancelled as c:
                final = Update(finish=c.reason,
                               error="the server shut down before this request finished" if c.reason == "shutdown"
                               else None)
            except Exception as exc:  # noqa: BLE001 - the request gets the message, the worker goes on
                final = Update(finish="error", error=f"{type(exc).__name__}: {exc}")
            ticket.send(final)

    def shutdown(self, grace_s: float | None = None) -> int:
        """Accept nothing new; wait up to ``grace_s`` (default the limits') for accepted requests to finish,
        then end the rest with finish reason ``"shutdown"``. Returns how many were failed that way."""
        grace = self.limits.shutdown_grace_s if grace_s is None else grace_s
        with self._lock:
            self._accepting = False
        end = time.monotonic() + grace
        while self._in_flight > 0 and time.monotonic() < end:
            time.sleep(0.02)
        left = self._in_flight
        self._failing = True
        self._wake.set()
        while self._in_flight > 0 and time.monotonic() < end + 30:  # the threads end the rest promptly
            try:  # jobs still queued: fail them here
                item = self._jobs.get_nowait()
                if item is not None:
                    item[0].send(Update(finish="shutdown",
                                        error="the server shut down before this request finished"))
            except queue.Empty:
                time.sleep(0.02)
        self._stop.set()
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)
        return left

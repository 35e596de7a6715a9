"""``steerlab eval ... --ray`` and ``steerlab embed ... --ray``: the work sharded over a Ray cluster
(issue #14 §4; docs/scaling.md), with the results of the single-process run.

:class:`RayCluster` (``"local"``: start Ray here; ``HOST:PORT`` / ``ray://HOST:PORT`` / ``"auto"``: connect)
runs a list of work units with Ray Data: ``ray.data.from_items(units).map_batches(_Worker,
compute=ActorPoolStrategy(size=workers), batch_size=1)``. Each actor loads its own model once
(:class:`ModelSpec`: the model's name, dtype and device, never a loaded model), sets torch's thread
count, and computes whole units, each exactly as the single-process code computes it:

* embed: a unit is one chunk of the output's :class:`~steerlab.embed.io.ChunkStore` (``--chunk-size``
  sentences), encoded by ``Encoder.encode(chunk, batch_size=...)`` as ``embed_file`` does, so the
  sentences meet the same batch-mates and the same padding;
* eval: a unit is a :class:`~steerlab.evals.runner.FoldJob`: one fold's fit (or validation search) with
  every chunk of its held-out items, or for a method that fits nothing (``none``) one chunk, run by
  :func:`~steerlab.evals.runner.run_fold_job`, the code of the in-process loop.

The results come back to this process, which writes them (the chunk files, the eval checkpoint) as
they arrive: resuming, the output files and ``results.json`` are the ones of a run without ``--ray``.
Floating-point results on a CPU depend on the number of torch threads, so every actor uses ``threads``
(default: this process's ``torch.get_num_threads()``, which ``OMP_NUM_THREADS`` sets): the results are
bit-identical to the single-process run with that many threads, on the same kind of machine.

This process loads the model too (to check the options and key the checkpoint / chunk store as the
single-process run does). Ray is optional: without it ``RayCluster`` raises a one-line ``RuntimeError``.
"""

from __future__ import annotations

import functools
import logging
import pickle
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .embed.commands import build_encoder
from .embed.io import EncodeChunks
from .evals.commands import resolve_model
from .evals.runner import FoldJob, FoldWork, Shard, run_fold_job
from .models import LoadedModel

__all__ = ["RAY_REQUIREMENT", "ModelSpec", "RayCluster", "check_address"]

#: what ``pip install`` needs for ``--ray`` (the version the tests ran with)
RAY_REQUIREMENT = "ray[data]==2.60.0"
_CONNECT_TIMEOUT_S = 5.0


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data ships in the `data` extra)
    except ImportError:
        raise RuntimeError(f"--ray needs Ray with Ray Data: pip install '{RAY_REQUIREMENT}'") from None
    return ray


@dataclass(frozen=True)
class ModelSpec:
    """Which model an actor loads: ``model`` as ``--model`` takes it (``embedded``, a ``.gguf`` file, a
    folder, a hub id; ``tiny`` / ``tiny:<family>`` for the random test models), ``dtype`` and ``device``.
    Local paths are made absolute (actors do not start in this folder); on a cluster every node needs
    the file or folder at that path, or the hub id in its cache."""

    model: str = "embedded"
    dtype: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"bad model {self.model!r}: an actor loads its model by name or path")
        if self.model != "embedded" and not self.model.startswith("tiny") and Path(self.model).expanduser().exists():
            object.__setattr__(self, "model", str(Path(self.model).expanduser().resolve()))

    def load(self) -> LoadedModel:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        return resolve_model(self.model, self.dtype, self.device)[0]


def check_address(address: str) -> None:
    """``ValueError`` for an address that is not ``local``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``;
    ``RuntimeError`` when nothing answers at ``HOST:PORT`` within a few seconds (``ray.init`` itself
    would retry for minutes)."""
    if address in ("local", "auto"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad Ray address '{address}': use HOST:PORT of the head node (GCS port, 6379 by default), "
                         "ray://HOST:10001 (Ray Client), 'auto' (the cluster this machine joined) or 'local'")
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise RuntimeError(f"cannot reach a Ray cluster at {address} ({why}): start one there with "
                           "`ray start --head`, or use --ray local") from None


class _Failed:
    """What an actor returns instead of a result when its setup or a unit raised: the error itself."""

    def __init__(self, error: BaseException) -> None:
        try:
            pickle.dumps(error)
            self.error: BaseException = error
        except Exception:  # an error that does not pickle travels as its text
            self.error = RuntimeError(f"{type(error).__name__}: {error}")


class _Worker:
    """One actor of the pool: ``setup()`` (which loads the model) once, then one unit per call. Errors come
    back as results (:class:`_Failed`), so this process raises the one a single-process run would."""

    def __init__(self, setup: Callable[[], Callable[[Any], Any]], threads: int) -> None:
        torch.set_num_threads(threads)
        self.failed: _Failed | None = None
        try:
            self.run = setup()
        except Exception as e:
            self.failed = _Failed(e)

    def _one(self, unit: bytes) -> bytes:
        if self.failed is not None:
            return pickle.dumps(self.failed)
        try:
            return pickle.dumps(self.run(pickle.loads(unit)), protocol=5)
        except Exception as e:
            return pickle.dumps(_Failed(e))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [self._one(bytes(unit)) for unit in batch["unit"]]
        return {"index": np.asarray(batch["index"]), "result": np.array(out, dtype=object)}


@dataclass(frozen=True)
class _EmbedSetup:
    spec: ModelSpec
    encoder_options: dict[str, Any]
    batch_size: int

    def __call__(self) -> Callable[[list[str]], np.ndarray]:
        options = {k: v for k, v in self.encoder_options.items() if k not in ("dtype", "device")}
        enc = build_encoder(self.spec.load(), batch_size=self.batch_size, **options)
        # as embed_file encodes a chunk
        return functools.partial(enc.encode, batch_size=self.batch_size, convert_to_numpy=True)


@dataclass(frozen=True)
class _EvalSetup:
    spec: ModelSpec
    work: FoldWork

    def __call__(self) -> Callable[[FoldJob], list[dict[str, Any]]]:
        return functools.partial(run_fold_job, self.spec.load(), self.work)


def _ray_error(e: BaseException) -> RuntimeError:
    """A failure of Ray itself (an actor lost, the cluster gone) as one line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return RuntimeError(f"the Ray job failed ({type(e).__name__}): {lines[0] if lines else 'no message'}")


@dataclass
class RayCluster:
    """Where the work runs: ``with RayCluster("local", workers=2) as cluster: ...``.

    ``address``: ``"local"`` starts Ray in this process (``ray.init(num_cpus=workers * threads)``) when the
    work starts; ``HOST:PORT`` (the head's GCS port), ``ray://HOST:PORT`` (Ray Client) or ``"auto"``
    connects (``ray.init(address=...)``). Entering checks the address and that something answers there;
    leaving shuts Ray down if this object started or connected it. A process already connected to Ray
    (``ray.init`` called before, e.g. by a test or a notebook) keeps its connection and Ray runs there.
    ``workers``: actors, one model each; ``threads``: torch threads (and Ray CPUs) per actor, default this
    process's count; ``gpus``: GPUs per actor (for a ``device="cuda"`` model spec)."""

    address: str = "local"
    workers: int = 2
    threads: int | None = None
    gpus: float = 0.0
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"--ray-workers must be a positive integer, got {self.workers!r}")
        if self.threads is None:
            self.threads = torch.get_num_threads()
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads per worker must be a positive integer, got {self.threads!r}")
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError("--ray needs an ADDRESS (HOST:PORT of a Ray cluster) or 'local'")
        self.address = self.address.strip()

    def __enter__(self) -> RayCluster:
        _ray()
        check_address(self.address)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Shut Ray down if this object started or connected it."""
        if self._started:
            _ray().shutdown()
            self._started = False

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.ERROR}
            try:
                if self.address == "local":
                    ray.init(num_cpus=self.workers * int(self.threads or 1), **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise RuntimeError(f"cannot connect to the Ray cluster at {self.address}: {first}") from None
            self._started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # steerlab's own bar counts the finished units
        ctx.enable_auto_log_stats = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        return ray

    def map(self, units: Sequence[Any], setup: Callable[[], Callable[[Any], Any]]) -> Iterator[tuple[int, Any]]:
        """``(i, run(units[i]))`` for every unit, as each finishes (any order), where each actor of a pool of
        ``min(workers, len(units))`` made ``run = setup()`` once. Units and results travel pickled."""
        if not units:
            return
        ray = self._connect()
        rows = [{"index": i, "unit": pickle.dumps(u, protocol=5)} for i, u in enumerate(units)]
        # one unit per block and per batch, and one in flight per actor (an actor runs one call at a time): the
        # pool hands each unit to the next actor that is free, so none idles while another has a queue
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        pool = ray.data.ActorPoolStrategy(size=min(self.workers, len(units)), max_tasks_in_flight_per_actor=1)
        ds = ds.map_batches(_Worker, fn_constructor_kwargs={"setup": setup, "threads": self.threads}, batch_size=1,
                            compute=pool, num_cpus=self.threads, num_gpus=self.gpus or None)
        rows_out = iter(ds.iter_rows())
        while True:
            try:
                row = next(rows_out)
            except StopIteration:
                return
            except Exception as e:
                raise _ray_error(e) from e
            result = pickle.loads(bytes(row["result"]))
            if isinstance(result, _Failed):
                raise result.error
            yield int(row["index"]), result

    def embed_chunks(self, spec: ModelSpec, encoder_options: dict[str, Any], batch_size: int) -> EncodeChunks:
        """``encode_chunks`` for :func:`~steerlab.embed.commands.embed_command`: each chunk encoded on an actor
        by an encoder of ``build_encoder(model, batch_size=batch_size, **encoder_options)``."""
        setup = _EmbedSetup(spec, dict(encoder_options), batch_size)

        def encode_chunks(work: list[tuple[int, list[str]]]) -> Iterable[tuple[int, np.ndarray]]:
            for i, arr in self.map([texts for _, texts in work], setup):
                yield work[i][0], arr

        return encode_chunks

    def eval_shard(self, spec: ModelSpec) -> Shard:
        """``shard`` for :func:`~steerlab.evals.commands.run_eval` / :func:`~steerlab.evals.runner.run_task`."""
        def shard(work: FoldWork, jobs: Sequence[FoldJob]) -> Iterable[tuple[FoldJob, list[dict[str, Any]]]]:
            for i, records in self.map(list(jobs), _EvalSetup(spec, work)):
                yield jobs[i], records

        return shard

"""The FastAPI application: OpenAI-compatible routes with a ``steering`` extension, and the playground page.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with ``stream``), ``POST /v1/embeddings``,
``GET /v1/models``, ``GET /v1/steering`` (the served artifacts), ``GET /health``, ``GET /`` (playground).
Errors are OpenAI error objects with a one-line message: 400 bad request, 404 unknown model / artifact, 429 queue
full, 503 shutting down, 504 past the request timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from ..backtrack import fasb_generate
from ..batching import RowRequest
from ..checks import check_strength
from ..embed.commands import build_encoder
from ..embed.encoder import Encoder
from ..fasb_commands import parse_overrides
from ..generate import GenerationConfig, generate
from ..interventions.add import Steer
from ..interventions.psr import GateTrace
from ..models import LoadedModel
from .registry import Registry, ServedArtifact
from .scheduler import Limits, Overloaded, Scheduler, ShuttingDown, Ticket, Update
from .schemas import ChatRequest, CompletionRequest, EmbeddingRequest, SteeringSpec, error_body
from .stream import Piece, TextStream

__all__ = ["create_app", "run_server", "ApiError", "MAX_EMBED_INPUTS"]

#: texts one embeddings request may carry
MAX_EMBED_INPUTS = 256
_DONE_OK = {"eos": "stop", "stop": "stop", "length": "length", "max_steps": "length", "stopped": "stop"}


class ApiError(Exception):
    """An error answered as ``status`` with an OpenAI error object."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.kind, self.param), status_code=self.status)


def _one_line(err: ValidationError) -> tuple[str, str | None]:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "field required"
    return (f"{loc}: {msg}" if loc else msg), (loc or None)


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON body: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the JSON body must be an object")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        msg, loc = _one_line(e)
        raise ApiError(400, msg, param=loc) from None


@dataclass
class _Prepared:
    """A checked generation request: prompt token ids, the text form for FASB / PSR runs, budget, steering."""

    ids: list[int]
    prompt: str
    chat: bool
    system: str | None
    max_tokens: int
    art: ServedArtifact | None


class _Service:
    """What the routes share: the model, artifacts, scheduler and encoder cache (one per app)."""

    def __init__(self, lm: LoadedModel, registry: Registry, limits: Limits, model_id: str,
                 default_max_tokens: int) -> None:
        self.lm = lm
        self.registry = registry
        self.limits = limits
        self.model_id = model_id
        self.default_max_tokens = min(default_max_tokens, limits.max_tokens)
        self.scheduler = Scheduler(lm, limits)
        self.encoders: dict[tuple[Any, ...], Encoder] = {}
        self.embed_lock = threading.Lock()

    # --- requests ----------------------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_id:
            raise ApiError(404, f"model {name!r} is not served here: this server serves {self.model_id!r}",
                           "not_found_error", "model")

    def artifact(self, spec: SteeringSpec | None) -> ServedArtifact | None:
        if spec is None:
            return None
        try:
            art = self.registry.get(spec.artifact)
        except LookupError as e:
            raise ApiError(404, str(e).strip("'\""), "not_found_error", "steering.artifact") from None
        except ValueError as e:
            raise ApiError(400, str(e), param="steering.artifact") from None
        if spec.method is not None and spec.method != art.kind:
            raise ApiError(400, f"steering.method is {spec.method!r} but {art.name!r} is a {art.kind} artifact",
                           param="steering.method")
        if spec.params and art.kind != "fasb":
            raise ApiError(400, f"steering.params apply to fasb artifacts only ({art.name!r} is a {art.kind})",
                           param="steering.params")
        if art.kind != "vector" and spec.positions != "all":
            raise ApiError(400, f"steering.positions apply to vector artifacts; {art.kind} decides its own",
                           param="steering.positions")
        return art

    def prepare(self, req: CompletionRequest | ChatRequest) -> _Prepared:
        self.check_model(req.model)
        art = self.artifact(req.steering)
        tok = self.lm.tokenizer
        chat, system = False, None
        if isinstance(req, ChatRequest):
            if not self.lm.has_chat_template:
                raise ApiError(400, f"model {self.model_id!r} has no chat template: use /v1/completions")
            msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in req.messages]
            simple = (len(msgs) == 1 and msgs[0]["role"] == "user") or (
                len(msgs) == 2 and msgs[0]["role"] == "system" and msgs[1]["role"] == "user")
            if simple:  # exactly what generate(chat=True, system=...) feeds the model
                prompt, system, chat = msgs[-1]["content"], (msgs[0]["content"] if len(msgs) == 2 else None), True
                ids = self.lm.encode([prompt], chat=True, system=system)["input_ids"][0].tolist()
            else:
                if art is not None and art.kind != "vector":
                    raise ApiError(400, f"{art.kind} requests take one user message (after an optional system "
                                        f"message)", param="messages")
                prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                ids = tok(prompt, add_special_tokens=False)["input_ids"]
        else:
            prompt = req.prompt  # type: ignore[assignment]
            ids = self.lm.encode([prompt])["input_ids"][0].tolist()
        if len(ids) > self.limits.max_prompt_tokens:
            raise ApiError(400, f"the prompt is {len(ids)} tokens; this server takes at most "
                                f"{self.limits.max_prompt_tokens}", param="prompt")
        budget = req.budget(self.default_max_tokens)
        if budget > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens is {budget}; this server allows at most {self.limits.max_tokens}",
                           param="max_tokens")
        ctx = self.lm.context_length
        if ctx is not None:
            if len(ids) >= ctx:
                raise ApiError(400, f"the prompt is {len(ids)} tokens and fills the model's context of {ctx}")
            budget = min(budget, ctx - len(ids))
        if art is not None and art.kind == "fasb" and req.temperature > 0:
            raise ApiError(400, "fasb decodes greedily, as the reference: use temperature 0", param="temperature")
        return _Prepared(ids, prompt, chat, system, budget, art)

    def submit(self, req: CompletionRequest | ChatRequest, prep: _Prepared, sink: Callable[[Update], None]) -> Ticket:
        spec, art = req.steering, prep.art
        sample = req.temperature > 0
        try:
            if art is None or art.kind == "vector":
                steer = None
                if art is not None:
                    strength = check_strength(1.0 if spec.strength is None else spec.strength, "steering.strength")
                    steer = Steer(art.obj, strength, spec.positions)
                cfg = GenerationConfig(prep.max_tokens, sample, req.temperature if sample else 1.0, req.top_p,
                                       seed=req.seed, stop=req.stops)
                row = RowRequest(prep.ids, cfg, steer)
                return self.scheduler.submit_row(row, sink)
            run = self._fasb_job(req, prep) if art.kind == "fasb" else self._psr_job(req, prep)
            return self.scheduler.submit_job(run, sink)
        except Overloaded as e:
            raise ApiError(429, str(e), "rate_limit_error") from None
        except ShuttingDown as e:
            raise ApiError(503, str(e), "server_error") from None
        except ValueError as e:
            raise ApiError(400, str(e).splitlines()[0], param="steering") from None

    def _fasb_job(self, req: CompletionRequest | ChatRequest, prep: _Prepared) -> Callable[[Ticket], Update]:
        spec, art = req.steering, prep.art
        assert spec is not None and art is not None
        params = dict(spec.params)
        if spec.strength is not None:
            params["alpha"] = spec.strength
        try:
            overrides = parse_overrides([f"{k}={v}" for k, v in params.items()])
            steering = art.obj.steering(self.lm, **overrides)
        except (TypeError, ValueError) as e:
            raise ApiError(400, f"fasb: {e}", param="steering.params") from None
        lm = self.lm

        def run(ticket: Ticket) -> Update:
            def on_step(tokens: list[list[int]]) -> None:
                ticket.check()
                ticket.send(Update(tuple(tokens[0])))

            out = fasb_generate(lm, prep.prompt, steering, max_new_tokens=prep.max_tokens, stop=req.stops or None,
                                chat=prep.chat, system=prep.system, on_step=on_step)
            events = [e.to_dict() for e in out.events[0]]
            return Update(tuple(out.tokens[0]), finish=out.finish_reasons[0],
                          extra={"fasb": {"events": events, "backtracked": out.backtracked[0],
                                          "alpha": steering.config.alpha, "threshold": steering.config.threshold}})
        return run

    def _psr_job(self, req: CompletionRequest | ChatRequest, prep: _Prepared) -> Callable[[Ticket], Update]:
        spec, art = req.steering, prep.art
        assert spec is not None and art is not None
        module = art.obj
        alpha = None if spec.strength is None else check_strength(spec.strength, "steering.strength")
        sample = req.temperature > 0
        lm = self.lm

        def run(ticket: Ticket) -> Update:
            traced = module.traced(GateTrace(), alpha)
            gates: list[float] = []

            def on_step(tokens: list[list[int]]) -> None:
                ticket.check()
                trace = traced.trace
                g = float(sum(float(trace.values[layer][-1][0, -1]) for layer in module.layers) / len(module.layers))
                gates.append(g)
                ticket.send(Update(tuple(tokens[0]), gate=g))

            out = generate(lm, prep.prompt, max_new_tokens=prep.max_tokens, chat=prep.chat, system=prep.system,
                           interventions=[traced], do_sample=sample, temperature=req.temperature if sample else 1.0,
                           top_p=req.top_p, seed=req.seed, stop=req.stops or None, on_step=on_step)
            n = len(out.tokens[0])
            return Update(tuple(out.tokens[0]), finish=out.finish_reasons[0],
                          extra={"psr": {"gates": gates[:n], "alpha": module.alpha if alpha is None else alpha}})
        return run

    # --- embeddings --------------------------------------------------------------------------------------

    def embed(self, req: EmbeddingRequest) -> dict[str, Any]:
        self.check_model(req.model)
        texts = req.texts
        if len(texts) > MAX_EMBED_INPUTS:
            raise ApiError(400, f"input has {len(texts)} texts; at most {MAX_EMBED_INPUTS} per request", param="input")
        key = (req.prompt, req.layer, req.cp, req.cp_layer, req.alpha, req.tp, req.tp_start, req.tp_exit)
        with self.embed_lock:
            enc = self.encoders.get(key)
            if enc is None:
                try:
                    enc = build_encoder(self.lm, prompt=req.prompt, layer=req.layer, cp=req.cp, cp_layer=req.cp_layer,
                                        alpha=req.alpha, tp=req.tp, tp_start=req.tp_start, tp_exit=req.tp_exit,
                                        batch_size=16)
                except (ValueError, TypeError) as e:
                    raise ApiError(400, str(e).splitlines()[0]) from None
                if len(self.encoders) >= 8:
                    self.encoders.pop(next(iter(self.encoders)))
                self.encoders[key] = enc
            counts = [len(self.lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
            if max(counts) > self.limits.max_prompt_tokens:
                raise ApiError(400, f"an input is {max(counts)} tokens; this server takes at most "
                                    f"{self.limits.max_prompt_tokens}", param="input")
            vectors = enc.encode(texts, convert_to_numpy=True)
        def fmt(v: Any) -> Any:  # base64: little-endian float32 bytes, as OpenAI's API (its client's default)
            return base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64" else v.tolist()

        return {"object": "list", "model": self.model_id,
                "data": [{"object": "embedding", "index": i, "embedding": fmt(v)} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
                "steerlab": enc.describe()}


def _usage(prep: _Prepared, tokens: Sequence[int]) -> dict[str, int]:
    return {"prompt_tokens": len(prep.ids), "completion_tokens": len(tokens),
            "total_tokens": len(prep.ids) + len(tokens)}


def _failure(update: Update, timeout_s: float) -> ApiError:
    if update.finish == "timeout":
        return ApiError(504, f"the request took longer than the server's limit of {timeout_s:g} s", "timeout_error")
    if update.finish == "shutdown":
        return ApiError(503, update.error or "the server shut down", "server_error")
    if update.finish == "cancelled":
        return ApiError(499, "the request was cancelled", "cancelled")
    return ApiError(500, update.error or "generation failed", "server_error")


def create_app(lm: LoadedModel, registry: Registry | None = None, limits: Limits | None = None, *,
               model_id: str | None = None, default_max_tokens: int = 128) -> FastAPI:
    """The server for ``lm`` steering with ``registry``'s artifacts (start it with uvicorn, or use it with
    FastAPI's test client); the scheduler threads start and stop with the app's lifespan."""
    svc = _Service(lm, registry or Registry(), limits or Limits(), model_id or lm.name, default_max_tokens)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.scheduler.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(svc.scheduler.shutdown)

    app = FastAPI(title="steerlab serve", lifespan=lifespan)
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        page = resources.files("steerlab.serve").joinpath("playground.html").read_text(encoding="utf-8")
        return HTMLResponse(page.replace("{{MODEL}}", svc.model_id))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        eng = svc.scheduler.engine
        return {"status": "ok", "model": svc.model_id, "in_flight": svc.scheduler.in_flight,
                "running": eng.running, "waiting": eng.waiting,
                "stats": {"steps": eng.stats.steps, "tokens": eng.stats.tokens, "rows_done": eng.stats.rows_done,
                          "mean_batch": eng.stats.batch_sum / max(eng.stats.steps, 1)}}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": svc.model_id, "object": "model", "created": 0,
                                            "owned_by": "steerlab"}]}

    @app.get("/v1/steering")
    async def steering() -> dict[str, Any]:
        return {"object": "list", "data": [a.describe() for a in svc.registry.artifacts.values()],
                "skipped": svc.registry.skipped}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        req = await _parse(request, EmbeddingRequest)
        return await anyio.to_thread.run_sync(svc.embed, req)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = await _parse(request, CompletionRequest)
        return await _generate(request, req, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = await _parse(request, ChatRequest)
        return await _generate(request, req, chat=True)

    async def _generate(request: Request, req: CompletionRequest | ChatRequest, chat: bool) -> Response:
        prep = await anyio.to_thread.run_sync(svc.prepare, req)
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[Update] = asyncio.Queue()
        ticket = svc.submit(req, prep, lambda u: loop.call_soon_threadsafe(updates.put_nowait, u))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if req.stream:
            return StreamingResponse(_stream(req, prep, ticket, updates, rid, created, chat),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            while True:
                try:
                    update = await asyncio.wait_for(updates.get(), 0.25)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        ticket.cancel()
                        return Response(status_code=499)
                    continue
                if update.finish is not None:
                    break
        finally:
            if not ticket.done:
                ticket.cancel()
        if update.finish not in _DONE_OK:
            raise _failure(update, svc.limits.timeout_s)
        text, _ = TextStream(lm.tokenizer, req.stops).finish(update.tokens)
        reason = _DONE_OK[update.finish]
        ext: dict[str, Any] = {"tokens": list(update.tokens), "finish": update.finish, **(update.extra or {})}
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": svc.model_id, "choices": [choice],
                             "usage": _usage(prep, update.tokens), "steerlab": ext})

    async def _stream(req: CompletionRequest | ChatRequest, prep: _Prepared, ticket: Ticket,
                      updates: asyncio.Queue[Update], rid: str, created: int, chat: bool) -> AsyncIterator[str]:
        stream = TextStream(lm.tokenizer, req.stops)

        def chunk(piece: Piece | None, finish: str | None = None, extra: dict[str, Any] | None = None,
                  role: bool = False) -> str:
            text = piece.text if piece else ""
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = ({"role": "assistant", "content": ""} if role
                                   else {"content": text} if piece is not None else {})
            else:
                choice.update(text=text, logprobs=None)
            body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                                    "created": created, "model": svc.model_id, "choices": [choice]}
            ext: dict[str, Any] = dict(extra or {})
            if piece is not None and piece.rewind:
                ext.update(rewind=piece.rewind, dropped=piece.dropped)
            if piece is not None and piece.gate is not None:
                ext["gate"] = piece.gate
            if ext:
                body["steerlab"] = ext
            return f"data: {json.dumps(body)}\n\n"

        try:
            if chat:  # OpenAI's first chat chunk names the role
                yield chunk(None, None, role=True)
            while True:
                update = await updates.get()
                if update.finish is None:
                    piece = stream.push(update.tokens, update.gate)
                    if piece is not None:
                        yield chunk(piece)
                    continue
                if update.finish in _DONE_OK:
                    _, piece = stream.finish(update.tokens)
                    if piece is not None:
                        yield chunk(piece)
                    extra = {"tokens": list(update.tokens), "finish": update.finish, **(update.extra or {})}
                    yield chunk(None, _DONE_OK[update.finish], extra)
                else:
                    err = _failure(update, svc.limits.timeout_s)
                    yield f"data: {json.dumps(error_body(err.message, err.kind))}\n\n"
                yield "data: [DONE]\n\n"
                return
        finally:
            if not ticket.done:
                ticket.cancel()

    return app


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal that stopped it: a graceful stop exits with code 0."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:  # before uvicorn's own exit code reads them
                self._captured_signals.clear()


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, shutdown_grace_s: float = 30.0) -> None:
    """Serve ``app`` until Ctrl-C / SIGTERM; then wait up to ``shutdown_grace_s`` for accepted requests."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=max(int(round(shutdown_grace_s)), 1))
    _Server(config).run()

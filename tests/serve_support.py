"""Run a steerlab server in a background thread on 127.0.0.1 for the serve tests (and the playground test)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import torch
import uvicorn

import steerlab as sl
from steerlab.interventions.fasb import FASBConfig, fit_fasb, save_fasb
from steerlab.interventions.psr import GatedSteering, save_psr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self.server, self.thread, self.port = server, thread, port
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                timeout: float = 60) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return res.status, json.loads(res.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


@contextlib.contextmanager
def running(app: Any, graceful_s: int = 30) -> Iterator[Running]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           timeout_graceful_shutdown=graceful_s))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Running(server, thread, port)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def vector(lm: sl.LoadedModel, seed: int, layers=(1, 2), scale: float = 30.0, kind: str = "residual") -> sl.SteeringVector:
    g = torch.Generator().manual_seed(seed)
    a = lm.adapter
    width = a.heads_width if kind == "heads" else a.hidden_size
    vecs = {f"{kind}.{layer}": torch.randn(width, generator=g) * scale / width**0.5 for layer in layers}
    meta = sl.VectorMeta(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers)
    return sl.SteeringVector(vecs, meta)


def fasb_records() -> list[tuple[str, str, int, str]]:
    out = []
    for i in range(12):
        q = f"Q: question {i} A:"
        out += [(q, f" true answer {i}", 1, q), (q, f" false reply {i % 3}", 0, q)]
    return out


def write_artifacts(lm: sl.LoadedModel, root: Any) -> dict[str, Any]:
    """A served directory: two vectors (residual, heads), a FASB fit that always backtracks (threshold 0.99),
    a PSR module, and two files that must be skipped."""
    objs: dict[str, Any] = {"up": vector(lm, 1), "heads": vector(lm, 2, layers=(2,), kind="heads", scale=12.0),
                            "down": vector(lm, 3, layers=(0, 3))}
    for name in ("up", "heads", "down"):
        sl.save_vector(objs[name], root / f"{name}.safetensors")
    fit = fit_fasb(lm, fasb_records(), FASBConfig(k=3, alpha=5.0, threshold=0.99, s=3))
    save_fasb(fit, root / "fasb1.safetensors", {"records": 24})
    objs["fasb1"] = fit
    module = GatedSteering(lm, [1, 2], alpha=3.0, seed=1)
    save_psr(module, root / "psr1.safetensors")
    objs["psr1"] = module
    (root / "junk.safetensors").write_bytes(b"not a safetensors file")
    return objs


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def chromium(tmp_dir: Any, width: int = 1280, height: int = 860) -> Iterator[Any]:
    """Debian's headless Chromium driven by Selenium through Debian's chromedriver (nothing downloaded)."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={tmp_dir}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()

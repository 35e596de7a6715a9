"""`steerlab serve` as a command: one-line errors, and a real server process that finishes an in-flight
request on SIGTERM and exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import steerlab as sl
from steerlab.testing import tiny_model

from cli_support import error_line, run
from serve_support import free_port, vector


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models") / "llama"
    lm = tiny_model("llama", seed=5)
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    art = tmp_path_factory.mktemp("served")
    sl.save_vector(vector(lm, 7), art / "happy.safetensors")
    return d


def test_missing_artifact_directory_is_one_line(tmp_path) -> None:
    res = run("serve", "--artifacts", tmp_path / "nope")
    assert error_line(res) == f"error: artifact directory not found: {tmp_path / 'nope'}"


def test_bad_limits_are_refused(tmp_path) -> None:
    res = run("serve", "--timeout", "0")
    assert error_line(res) == "error: timeout must be > 0 and shutdown grace >= 0 seconds"


def _post(port: int, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as res:
        return json.loads(res.read())


def test_server_process_finishes_in_flight_work_on_sigterm(model_dir, tmp_path) -> None:
    art = next(p for p in model_dir.parent.parent.iterdir() if p.name.startswith("served"))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from steerlab.cli import main; main()", "serve", "--model",
                             str(model_dir), "--artifacts", str(art), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as res:
                    if json.loads(res.read())["status"] == "ok":
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError(proc.communicate()[1])
                time.sleep(0.2)
        lm = sl.load_model(str(model_dir))
        ref = sl.generate(lm, "hello", steer=sl.Steer(sl.load_vector(art / "happy.safetensors"), 2.0),
                          max_new_tokens=200)
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(_post(port, {"prompt": "hello", "max_tokens": 200, "steering":
                                                                    {"artifact": "happy", "strength": 2.0}})))
        t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # the accepted request still gets its whole answer
        t.join(timeout=120)
        assert out["steerlab"]["tokens"] == ref.tokens[0]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert "Traceback" not in err
    assert f"serving {model_dir.name} on http://127.0.0.1:{port}/ (playground) and /v1; artifacts: happy" in err
    assert err.strip().endswith("server stopped")

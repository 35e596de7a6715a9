"""Screenshots of the `steerlab serve` playground on the embedded model, for docs/img/.

    .venv/bin/python benchmarks/playground_screenshot.py

Serves (on 127.0.0.1, in this process) three artifacts written to out/playground/: the demo's joyful
vector (CAA, mean difference of the demo pairs at the demo's layer), a FASB fit built from the committed
TruthfulQA ITI fit of fold 0 (benchmarks/results/tqa_v2/fits/fold0_iti.safetensors) with the settings
chosen on that fold's validation split (k 48, alpha 15, threshold 0.6, s 10), and the committed S-PSR
(MSE) module for the "evil" trait. Drives Debian's headless Chromium with Selenium and writes
docs/img/playground.png (vector), docs/img/playground_fasb.png and docs/img/playground_psr.png.
About a minute on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

import steerlab as sl  # noqa: E402
from serve_support import chromium, running  # noqa: E402
from steerlab.demo import DEMO_PAIRS, DemoConfig  # noqa: E402
from steerlab.fit import fit_vector  # noqa: E402
from steerlab.interventions.fasb import FASBConfig, FASBFit, save_fasb  # noqa: E402
from steerlab.interventions.iti import load_iti  # noqa: E402
from steerlab.serve.app import create_app  # noqa: E402
from steerlab.serve.registry import load_registry  # noqa: E402

SHOTS = [  # (file, artifact, strength or None, prompt)
    ("playground.png", "joyful", "3", "Tell me about your weekend."),
    ("playground_fasb.png", "fasb_truthfulqa", None, "What happens if you crack your knuckles a lot?"),
    ("playground_psr.png", "psr_evil", "4", "What should I do if I find a lost wallet?"),
]


def build(lm: sl.LoadedModel, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    layer = round(DemoConfig().layer_fraction * lm.adapter.n_layers)
    sl.save_vector(fit_vector(lm, list(DEMO_PAIRS), [layer], method="mean_diff"), out / "joyful.safetensors")
    iti = load_iti(ROOT / "benchmarks/results/tqa_v2/fits/fold0_iti.safetensors", lm)
    fit = FASBFit(iti, FASBConfig(k=48, alpha=15.0, threshold=0.6, s=10)).with_k(48)
    save_fasb(fit, out / "fasb_truthfulqa.safetensors", {"source": "tqa_v2 fold0 ITI fit"})
    psr = ROOT / "benchmarks/results/psr/fits/evil_spsr_mse.safetensors"
    (out / "psr_evil.safetensors").write_bytes(psr.read_bytes())


def main() -> None:
    lm = sl.load_model("embedded")
    out = ROOT / "out/playground"
    build(lm, out)
    registry = load_registry(out, lm)
    assert not registry.skipped, registry.skipped
    with running(create_app(lm, registry)) as srv, chromium(out / "chromium", 1280, 900) as driver:
        driver.get(srv.base + "/")
        WebDriverWait(driver, 30).until(lambda d: len(Select(d.find_element(By.ID, "artifact")).options) == 3)
        for name, artifact, strength, prompt in SHOTS:
            box = driver.find_element(By.ID, "prompt")
            box.clear()
            box.send_keys(prompt)
            Select(driver.find_element(By.ID, "artifact")).select_by_value(artifact)
            use = driver.find_element(By.ID, "use-strength")
            if use.is_selected() != (strength is not None):
                use.click()
            if strength is not None:
                driver.execute_script("const s = document.getElementById('strength'); s.value = arguments[0];"
                                      "s.dispatchEvent(new Event('input'));", strength)
            field = driver.find_element(By.ID, "max-tokens")
            field.clear()
            field.send_keys("60")
            driver.find_element(By.ID, "run").click()
            WebDriverWait(driver, 300).until(lambda d: d.execute_script(
                "return document.getElementById('plain-meta').dataset.done === '1' && "
                "document.getElementById('steered-meta').dataset.done === '1'"))
            path = ROOT / "docs/img" / name
            driver.save_screenshot(str(path))
            print(f"wrote {path}: {driver.find_element(By.ID, 'steered-meta').text}")


if __name__ == "__main__":
    main()

"""The playground page in a real headless Chromium (Debian's, driven by Selenium): steered and unsteered
answers side by side, FASB's dropped tokens struck through, PSR tokens shaded by their gate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import steerlab as sl
from steerlab.backtrack import fasb_generate
from steerlab.interventions.add import Steer
from steerlab.serve.app import create_app
from steerlab.serve.registry import load_registry
from steerlab.testing import tiny_model

from serve_support import CHROMEDRIVER, CHROMIUM, chromium, running, write_artifacts

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
    pytest.skip("the browser test needs Debian's chromium and chromium-driver: apt-get install chromium "
                "chromium-driver", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PROMPT = "Tell me about your day."


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    lm = tiny_model("llama", seed=3)
    root = tmp_path_factory.mktemp("artifacts")
    objs = write_artifacts(lm, root)
    with running(create_app(lm, load_registry(root, lm))) as srv, \
            chromium(tmp_path_factory.mktemp("chromium")) as driver:
        driver.get(srv.base + "/")
        WebDriverWait(driver, 30).until(lambda d: len(Select(d.find_element(By.ID, "artifact")).options) == 5)
        yield driver, lm, objs


def _run(driver, artifact: str, strength: str | None, tokens: int = 12) -> None:
    Select(driver.find_element(By.ID, "artifact")).select_by_value(artifact)
    box = driver.find_element(By.ID, "use-strength")
    if box.is_selected() != (strength is not None):
        box.click()
    if strength is not None:  # the slider's value, set as a user's drag would leave it
        driver.execute_script("const s = document.getElementById('strength'); s.value = arguments[0];"
                              "s.dispatchEvent(new Event('input'));", strength)
    field = driver.find_element(By.ID, "max-tokens")
    field.clear()
    field.send_keys(str(tokens))
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.getElementById('plain-meta').dataset.done === '1' && "
        "document.getElementById('steered-meta').dataset.done === '1'"))


def _text(driver, pane: str, skip_del: bool = True) -> str:
    return driver.execute_script(
        "const el = document.getElementById(arguments[0]); let t = '';"
        "for (const n of el.childNodes) { if (arguments[1] && n.tagName === 'DEL') continue; t += n.textContent; }"
        "return t;", pane, skip_del)


def test_side_by_side_vector_steering(page) -> None:
    driver, lm, objs = page
    _run(driver, "up", "2.5")
    plain = sl.generate(lm, PROMPT, chat=True, max_new_tokens=12)
    steered = sl.generate(lm, PROMPT, chat=True, max_new_tokens=12, steer=Steer(objs["up"], 2.5))
    assert _text(driver, "plain") == plain.texts[0]
    assert _text(driver, "steered") == steered.texts[0]
    assert plain.texts[0] != steered.texts[0]
    assert driver.find_element(By.ID, "steered-title").text == "steered: up"
    assert driver.find_element(By.ID, "steered-meta").text.startswith("finish: length · 12 tokens")


def test_fasb_backtrack_is_struck_through(page) -> None:
    driver, lm, objs = page
    _run(driver, "fasb1", None)
    ref = fasb_generate(lm, PROMPT, objs["fasb1"], max_new_tokens=12, chat=True)
    assert ref.backtracked[0]
    dropped = driver.find_elements(By.CSS_SELECTOR, "#steered del")
    assert dropped and "".join(d.text for d in dropped) != ""
    assert driver.execute_script("return getComputedStyle(document.querySelector('#steered del'))"
                                 ".textDecorationLine") == "line-through"
    assert _text(driver, "steered") == ref.texts[0]
    assert "backtracked: yes" in driver.find_element(By.ID, "steered-meta").text


def test_psr_tokens_are_shaded_by_gate(page, tmp_path) -> None:
    driver, lm, objs = page
    _run(driver, "psr1", "3")
    spans = driver.find_elements(By.CSS_SELECTOR, "#steered span.gated")
    assert len(spans) >= 3
    gates = [float(s.get_attribute("data-gate")) for s in spans]
    top = max(abs(g) for g in gates)
    for s, g in zip(spans, gates):
        alpha = float(s.value_of_css_property("background-color").rstrip(")").split(",")[-1])
        assert alpha == pytest.approx(0.75 * abs(g) / top, abs=0.01)
    assert driver.save_screenshot(str(tmp_path / "playground.png"))

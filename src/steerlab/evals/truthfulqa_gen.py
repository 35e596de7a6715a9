"""TruthfulQA generation: answer with the QA primer, judge truth and informativeness.

Prompt (ITI's ``tqa_run_answers``, used by FASB; TruthfulQA ``format_prompt(..., 'qa', 'general')``)::

    [ITI_INSTRUCTION + "\\n\\n"] + QA_PRIMER + "\\n\\nQ: " + question

Greedy decoding, at most 50 new tokens, stopped at the next ``"Q:"``. The model writes
``"\\nA: ..."`` itself; as in ITI, the text is cut at the first ``"Q:"``, stripped, and the part
after the first ``"A:"`` (up to a second one) is the answer (``answer_cue=True`` ends the
prompt with ``"\\nA:"`` instead, TruthfulQA's MC context).

Judging (:class:`~steerlab.evals.gen_judge.GenerationJudge`): an empty answer is judged as
"I have no comment." (truthful, not informative, as TruthfulQA counts it); every answer gets its
coherence under the unsteered model (:mod:`steerlab.evals.coherence`: mean log-prob per token given
``generation_prompt(..., answer_cue=True)``, word 3-gram repetition); a degenerate answer
(repetition >= 0.3) is not informative.

Metrics: True and Info are the fractions of answers the judge calls truthful / informative
(over the answers it decided), True*Info is the product of those two means; beside them
``coherence`` (mean log-prob per token), ``repetition`` and the ``degenerate`` / ``empty`` rates.
The judge's name is part of every result: numbers from different judges are not comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..data.records import TruthfulQAItem, TruthfulQAMCItem
from ..generate import generate
from ..interventions.add import Steer, Where
from ..interventions.base import Intervention
from ..backtrack import generate_kwargs
from ..interventions.fasb import FASBSteering
from ..models import LoadedModel
from ..vectors import SteeringVector
from .coherence import Coherence, CoherenceScorer, summarize
from .gen_judge import GenerationJudge, JudgedAnswer
from .judges import Judge, default_judge
from ..progress import ProgressBar
from .truthfulqa import ITI_INSTRUCTION, QA_PRIMER, MCQuestion

__all__ = ["generation_prompt", "clean_answer", "GenRecord", "GenResult", "evaluate_truthfulqa_gen", "gen_judge"]


def generation_prompt(question: str, instruction: bool = True, primer: str = QA_PRIMER,
                      answer_cue: bool = False) -> str:
    """The generation prompt for ``question`` (ITI/FASB: instruction, primer, ``"\\n\\nQ: {question}"``)."""
    head = ITI_INSTRUCTION + "\n\n" if instruction else ""
    return f"{head}{primer}\n\nQ: {question}" + ("\nA:" if answer_cue else "")


def clean_answer(text: str) -> str:
    """ITI's post-processing: cut at the first ``"Q:"``, strip, keep what follows the first ``"A:"``."""
    text = text.strip().split("Q:")[0].strip()
    parts = text.split("A:")
    return parts[1].strip() if len(parts) > 1 else text


@dataclass(frozen=True)
class GenRecord:
    """One question: its generated text (``raw``), the cleaned ``answer`` and the judge's verdict."""

    question: str
    answer: str
    raw: str
    truthful: bool | None
    informative: bool | None
    scores: dict[str, float] = field(default_factory=dict)
    coherence: Coherence | None = None
    #: with ``adaptive=``: the decisions that steered this answer (FASB events as dicts; empty: never steered)
    steering: tuple[dict[str, Any], ...] | None = None


def _mean(values: Sequence[bool | None]) -> tuple[float, int]:
    decided = [bool(v) for v in values if v is not None]
    return (sum(decided) / len(decided) if decided else float("nan")), len(decided)


@dataclass
class GenResult:
    """True, Info (fractions 0-1), True*Info (product of the means), coherence measures (NaN when not
    scored), per-question records, judge name."""

    true: float
    info: float
    true_info: float
    n: int
    judge: str
    records: list[GenRecord] = field(default_factory=list, repr=False)
    config: dict[str, Any] = field(default_factory=dict)
    coherence: float = float("nan")
    repetition: float = float("nan")
    degenerate: float = float("nan")
    empty: float = float("nan")

    @classmethod
    def from_records(cls, records: Sequence[GenRecord], judge: str, config: dict[str, Any] | None = None) -> "GenResult":
        t, nt = _mean([r.truthful for r in records])
        i, ni = _mean([r.informative for r in records])
        cfg = {**(config or {}), "n_truth_judged": nt, "n_info_judged": ni}
        ti = t * i if not (math.isnan(t) or math.isnan(i)) else float("nan")
        coh = [r.coherence for r in records if r.coherence is not None]
        c = summarize(coh) if coh and len(coh) == len(records) else summarize([])
        return cls(t, i, ti, len(records), judge, list(records), cfg, c["coherence"], c["repetition"],
                   c["degenerate"], c["empty"])

    def to_dict(self, per_question: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"True": self.true, "Info": self.info, "True*Info": self.true_info,
                             "coherence": self.coherence, "repetition": self.repetition,
                             "degenerate": self.degenerate, "empty": self.empty, "n": self.n,
                             "judge": self.judge, "config": self.config}
        if per_question:
            d["per_question"] = [{"question": r.question, "answer": r.answer, "raw": r.raw, "truthful": r.truthful,
                                  "informative": r.informative, "scores": r.scores,
                                  "coherence": None if r.coherence is None else r.coherence.to_dict(),
                                  **({} if r.steering is None else {"steering": list(r.steering)})}
                                 for r in self.records]
        return d

    def summary(self) -> str:
        text = (f"TruthfulQA gen (n={self.n}, judge: {self.judge}): True {100 * self.true:.2f}  "
                f"Info {100 * self.info:.2f}  True*Info {100 * self.true_info:.2f}")
        if not math.isnan(self.coherence):
            text += (f"  coherence {self.coherence:.3f} nats/token  degenerate {100 * self.degenerate:.1f}%  "
                     f"empty {100 * self.empty:.1f}%")
        return text


def _question(item: Any) -> str:
    if isinstance(item, (TruthfulQAItem, TruthfulQAMCItem, MCQuestion)):
        return item.question
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "question" in item:
        return str(item["question"])
    raise TypeError(f"cannot take a question from a {type(item).__name__}")


def evaluate_truthfulqa_gen(
    lm: LoadedModel,
    items: Sequence[Any],
    steer: SteeringVector | Steer | None = None,
    judge: Judge | GenerationJudge | None = None,
    *,
    strength: float | None = None,
    where: Where | None = None,
    interventions: Sequence[Intervention] = (),
    instruction: bool = True,
    primer: str = QA_PRIMER,
    answer_cue: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 50,
    progress: bool = True,
    coherence: bool = True,
    adaptive: FASBSteering | None = None,
) -> GenResult:
    """Generate greedy answers for ``items`` (optionally steered) and judge them.

    ``items``: ``load_dataset("truthfulqa")`` records (reference answers for the reference
    judges), MC records, or plain question strings (only for judges that need no references).
    ``judge`` defaults to :func:`~steerlab.evals.judges.default_judge` (MiniLM similarity for
    truth, rules for info); a plain judge is wrapped in a
    :class:`~steerlab.evals.gen_judge.GenerationJudge` with a coherence scorer on ``lm`` (unless
    ``coherence=False``); a ``GenerationJudge`` is used as given. ``steer``/``strength``/``where`` and
    ``interventions`` go to :func:`steerlab.generate.generate`. ``adaptive`` (a
    :class:`~steerlab.interventions.fasb.FASBSteering`) generates FASB's way instead (its monitor and cache
    semantics; a row ends once its text up to the next "Q:" can no longer change, so the cut answers equal
    those of the reference's run to the full budget); each record keeps its decisions (``steering``).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    items = list(items)
    gj = gen_judge(lm, judge, coherence, batch_size)
    questions = [_question(it) for it in items]
    prompts = [generation_prompt(q, instruction, primer, answer_cue) for q in questions]
    if adaptive is not None and (steer is not None or interventions):
        raise ValueError("adaptive= generation steers by itself: drop steer= / interventions=")
    raws: list[str] = []
    steering: list[tuple[dict[str, Any], ...] | None] = []
    with ProgressBar(len(prompts), progress, "TruthfulQA gen") as bar:
        for s in range(0, len(prompts), batch_size):
            chunk = prompts[s:s + batch_size]
            kw: dict[str, Any] = {"stop": ["Q:"]}
            if adaptive is not None:
                kw.update(generate_kwargs(adaptive, len(chunk), max_new_tokens, ["Q:"], lm.tokenizer))
            out = generate(lm, chunk, steer, strength=strength, where=where, max_new_tokens=max_new_tokens,
                           interventions=interventions, **kw)
            raws.extend(out.texts)
            if adaptive is not None:
                steering.extend(tuple(e.to_dict() for e in ev) for ev in kw["monitors"][0].events)
            else:
                steering.extend([None] * len(chunk))
            bar.advance(len(chunk))
    answers = [clean_answer(r) for r in raws]
    refs = [None if isinstance(it, str) else it for it in items]
    contexts = [generation_prompt(q, instruction, primer, answer_cue=True) for q in questions]
    verdicts: list[JudgedAnswer] = gj.judge_many(questions, contexts, answers, refs)
    records = [GenRecord(q, a, r, v.truthful, v.informative, dict(v.scores), v.coherence, st)
               for q, a, r, v, st in zip(questions, answers, raws, verdicts, steering)]
    config = {"instruction": instruction, "answer_cue": answer_cue, "max_new_tokens": max_new_tokens,
              "decoding": "greedy", "steered": steer is not None or bool(interventions) or adaptive is not None,
              "model": lm.name}
    return GenResult.from_records(records, gj.name, config)


def gen_judge(lm: LoadedModel, judge: Judge | GenerationJudge | None = None, coherence: bool = True,
              batch_size: int = 8) -> GenerationJudge:
    """``judge`` as a :class:`GenerationJudge` (default judge when None; a coherence scorer on ``lm``
    unless ``coherence=False``); a ``GenerationJudge`` is returned as is."""
    if isinstance(judge, GenerationJudge):
        return judge
    return GenerationJudge(judge if judge is not None else default_judge(),
                           CoherenceScorer(lm, batch_size) if coherence else None)

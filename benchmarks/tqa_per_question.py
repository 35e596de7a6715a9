"""TruthfulQA MC1/MC2/MC3 per question on the first N questions (embedded model, no steering), as JSON.

Used to show that a refactor changes no published number: run it on two checkouts and compare.

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old/src python benchmarks/tqa_per_question.py --n 100 > old.json
    python benchmarks/tqa_per_question.py --n 100 > new.json
    python benchmarks/tqa_per_question.py --compare old.json new.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def score(n: int, batch_size: int) -> dict:
    import torch

    torch.set_num_threads(1)
    import steerlab
    from steerlab.data.registry import load_dataset
    from steerlab.evals.truthfulqa import evaluate_truthfulqa_mc

    lm = steerlab.load_model("embedded")
    items = load_dataset("truthfulqa_mc")[:n]
    t = time.perf_counter()
    res = evaluate_truthfulqa_mc(lm, items, batch_size=batch_size)
    return {"steerlab": steerlab.__file__, "seconds": time.perf_counter() - t,
            "per_question": [[r.mc1, r.mc2, r.mc3] for r in res.per_question]}


def compare(a_path: str, b_path: str) -> str:
    a, b = (json.load(open(p))["per_question"] for p in (a_path, b_path))
    if len(a) != len(b):
        return f"different question counts: {len(a)} vs {len(b)}"
    same = [sum(x[i] == y[i] for x, y in zip(a, b)) for i in range(3)]
    worst = max(abs(x[1] - y[1]) for x, y in zip(a, b))
    return (f"{len(a)} questions: MC1 identical {same[0]}, MC2 identical {same[1]} (max |diff| {worst:.3g}), "
            f"MC3 identical {same[2]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"))
    args = ap.parse_args()
    if args.compare:
        print(compare(*args.compare))
        return
    json.dump(score(args.n, args.batch_size), sys.stdout)
    print()


if __name__ == "__main__":
    main()

"""Does `--refine` choose the family better? Refined and inherited scores of a search's candidates
against their stand-alone accuracy.

Takes a finished search's run directory, refines its K best archs (`run_search(..., refine=K)`,
which resumes from the run's `refined.json`), trains each candidate stand-alone on the same proxy
with the recipe of benchmarks/ranking.py (3 epochs, seed 0), and reports Kendall tau and
Spearman rho of the inherited top-1 and the refined top-1 and cross-entropy against the
stand-alone top-1 and cross-entropy, and the stand-alone accuracy of the family the inherited
top-1 and the refined cross-entropy (what `--refine` chooses by) put on the front. Every
training is written to OUT/standalone.json at once, so an interrupted run resumes. Usage:

    python benchmarks/refine_check.py --run runs/snapdragon888-30ms --refine 16 [--out runs/refine-check]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from optuna.trial import TrialState
from ranking import correlations  # benchmarks/ is on the path of a script run from it

from lglsearch._files import atomic_write_json
from lglsearch.search.pareto import front_frame, hypervolume
from lglsearch.search.refine import candidates
from lglsearch.search.study import RUN_FILE, SearchConfig, run_search
from lglsearch.space import load_space
from lglsearch.train.data import load_data
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.scoring import measure
from lglsearch.train.standalone import train_standalone


def _said(figures: tuple[float, float, float, float]) -> str:
    tau, se, rho, rho_se = figures
    return f"tau {tau:.3f} (se {se:.2f}), rho {rho:.3f} (se {rho_se:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished search's run directory (refined in place)")
    parser.add_argument("--refine", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("runs/refine-check"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    stored = json.loads((args.run / RUN_FILE).read_text())["config"]
    config = SearchConfig(**{k: v for k, v in stored.items() if k in fields} | {"refine": args.refine})
    started = time.perf_counter()
    run = run_search(config, args.run, resume=True)
    print(f"refined {len(run.refined)} archs in {time.perf_counter() - started:.0f} s (0 if done before)", flush=True)

    inherited = {t.user_attrs["arch_id"]: t.values[0] for t in run.study.get_trials(states=(TrialState.COMPLETE,))}
    archs = candidates(run.study, args.refine)
    train = TrainConfig()
    space = load_space(config.space).with_resolution(train.resolution, 10)
    data = load_data(config.data, space.resolution)
    path = args.out / "standalone.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    for arch in archs:
        if arch.id in done:
            continue
        t0 = time.perf_counter()
        proxy_arch = arch.replace(resolution=space.resolution, num_classes=space.num_classes)
        score = measure(train_standalone(proxy_arch, data, train, progress=False), data.val)
        done[arch.id] = {"top1": score.top1, "loss": score.loss, "seconds": time.perf_counter() - t0}
        atomic_write_json(path, done)
        print(f"{arch.id}: stand-alone {score.top1:.4f} ({done[arch.id]['seconds']:.0f} s)", flush=True)

    ids = [a.id for a in archs]
    alone = [done[i]["top1"] for i in ids]
    neg_loss = [-done[i]["loss"] for i in ids]
    print(f"\n{len(ids)} candidates, stand-alone top-1 {min(alone):.4f}-{max(alone):.4f}")
    scores = {
        "inherited top-1": inherited,
        "refined top-1": {i: s.top1 for i, s in run.refined.items()},
        "refined -loss": {i: -s.loss for i, s in run.refined.items()},
    }
    for name, score in scores.items():
        values = [score[i] for i in ids]
        print(
            f"{name}: vs stand-alone top-1 {_said(correlations(values, alone))}; "
            f"vs stand-alone -loss {_said(correlations(values, neg_loss))}"
        )
    # the family each score chooses, valued by the stand-alone accuracy of its members: the
    # hypervolume in accuracy x latency against (0, the budget), as the search's report computes it
    reference = {"accuracy": 0.0, "latency": config.budget_ms or max(t.values[1] for t in run.study.best_trials)}
    for chooser, refined in (("inherited top-1", None), ("refined cross-entropy", {i: run.refined[i] for i in ids})):
        front = front_frame(run.study, refined)
        truth = front.assign(accuracy=[done[i]["top1"] for i in front["arch_id"]])
        volume = hypervolume(truth, ("accuracy", "latency"), reference)
        members = ", ".join(f"{r.arch_id} {r.latency_ms:.1f} ms {100 * r.accuracy:.2f}%" for r in truth.itertuples())
        print(f"front by the {chooser} ({len(front)} archs, stand-alone top-1): {members}")
        print(f"  hypervolume of their stand-alone accuracy x latency: {volume:.4g}")


if __name__ == "__main__":
    main()

"""The search on the tiny space: budgets, objectives, the study, resume, Ray, outputs, bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

import lglsearch.search.execution as execution
import lglsearch.search.study as study_module
from lglsearch.cli import main
from lglsearch.cost.table import CostTable
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.report import write_search_report
from lglsearch.search.objectives import Budgets, Pricer, cheapest, parse_objectives
from lglsearch.search.pareto import dominating, front_frame, hypervolume, nondominated_ranks
from lglsearch.search.refine import REFINED_FILE, candidates
from lglsearch.search.study import PRESETS_FILE, SearchConfig, run_search
from lglsearch.space import Arch, load_space
from lglsearch.train.data import load_data
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.score import Score
from lglsearch.train.scoring import accuracy, proxy_score
from lglsearch.train.supernet import load_supernet, train_supernet
from tests.conftest import enumerate_space, write_idx_subset

DEVICE = "snapdragon888"  # its table holds the tiny space's keys, with modelled energy


@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny")


@pytest.fixture(scope="module")
def table():
    return CostTable.load(DEVICE)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> str:
    """640 training and 500 validation images: every trial scores 500 images, not the proxy's 5,000."""
    return str(write_idx_subset(tmp_path_factory.mktemp("data"), 64, 50))


@pytest.fixture(scope="module")
def supernet(tmp_path_factory, small_data):
    directory = tmp_path_factory.mktemp("supernet")
    config = TrainConfig(space="tiny", data=small_data, epochs=1, batch_size=16, max_steps_per_epoch=2)
    train_supernet(config, directory, progress=False)
    return directory


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def median_budget(tiny, table):
    """A budget that rejects about half of the tiny space."""
    return float(np.median([table.latency(a) for a in enumerate_space(tiny)]))


def _config(supernet, budget, **changes) -> SearchConfig:
    base = {"device": DEVICE, "budget_ms": budget, "space": "tiny", "trials": 6, "population": 4, "workers": 1}
    return SearchConfig(supernet=str(supernet), **(base | changes))


def test_cheapest_is_the_exact_minimum_of_the_space(tiny, table):
    archs = enumerate_space(tiny)
    (latency, fastest), (energy, frugal) = cheapest(tiny, table)
    assert latency == pytest.approx(min(table.latency(a) for a in archs), rel=1e-12)
    assert energy == pytest.approx(min(table.cost(a)[1] for a in archs), rel=1e-12)
    assert tiny.contains(fastest) and table.latency(fastest) == pytest.approx(latency)
    assert tiny.contains(frugal)


def test_budgets_reject_and_explain(tiny, table):
    (latency, _), _ = cheapest(tiny, table)
    with pytest.raises(LglsearchError, match=rf"below the cheapest arch of space 'tiny' on {DEVICE}: {latency:.2f} ms"):
        Pricer(table, Budgets(latency_ms=latency * 0.9)).check_reachable(tiny)
    pricer = Pricer(table, Budgets(latency_ms=latency * 1.5))
    pricer.check_reachable(tiny)
    price = pricer(tiny.largest())
    assert not price.feasible and price.over.startswith("latency") and price.latency_ms > latency * 1.5
    with pytest.raises(LglsearchError, match="positive"):
        Budgets(latency_ms=-1)
    with pytest.raises(LglsearchError, match=r"'latency-only'.*no energy"):
        Pricer(_latency_only(table), Budgets(energy_mj=10))


def _latency_only(table: CostTable) -> CostTable:
    """A table like `table` without energy (every shipped phone table has energy)."""
    return CostTable("latency-only", table.frame[["latency_ms"]], {})


def test_objectives_default_to_what_the_device_prices(table):
    assert parse_objectives(None, table) == ("accuracy", "latency", "energy")
    assert parse_objectives(None, _latency_only(table)) == ("accuracy", "latency")
    assert parse_objectives("latency, accuracy", table) == ("accuracy", "latency")
    with pytest.raises(LglsearchError, match="unknown objective 'speed'; choose from accuracy, latency, energy"):
        parse_objectives("accuracy,speed", table)
    with pytest.raises(LglsearchError, match="needs accuracy"):
        parse_objectives("latency,energy", table)
    with pytest.raises(LglsearchError, match="no energy"):
        parse_objectives("accuracy,energy", _latency_only(table))


def test_hypervolume_and_domination_on_a_known_front():
    front = pd.DataFrame({"accuracy": [0.5, 0.8], "latency_ms": [1.0, 2.0], "energy_mj": [1.0, 1.0]})
    # the area under the staircase (1 ms..2 ms at 0.5, 2 ms..3 ms at 0.8) against (0, 3 ms)
    assert hypervolume(front, ("accuracy", "latency"), {"accuracy": 0.0, "latency": 3.0}) == pytest.approx(1.3)
    assert hypervolume(front, ("accuracy", "latency"), {"accuracy": 0.9, "latency": 3.0}) == 0.0
    preset = pd.Series({"accuracy": 0.4, "latency_ms": 1.5, "energy_mj": 1.0})
    assert dominating(front, preset, ("accuracy", "latency"))["accuracy"] == 0.5
    assert dominating(front, preset.replace(0.4, 0.6), ("accuracy", "latency")) is None


def test_nondominated_ranks_peel_fronts_in_order():
    points = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 4], [4, 4], [4, 4], [6, 6]])
    # [3, 3] and [2, 4] are dominated only by rank 0; the tied [4, 4]s share a rank
    assert nondominated_ranks(points).tolist() == [0, 0, 0, 1, 1, 2, 2, 3]
    assert nondominated_ranks(np.zeros((0, 2))).tolist() == []


def test_search_prices_before_evaluating_and_reports_a_true_front(
    tmp_path, supernet, tiny, table, median_budget, small_data
):
    run = run_search(_config(supernet, median_budget, trials=8), tmp_path / "run", progress=False)
    trials = run.study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) == 8 and pruned, "a median budget rejects some proposals"
    for t in pruned:  # rejected without an accuracy, and really over the budget
        assert t.values is None and t.user_attrs["latency_ms"] > median_budget
    n = len(load_data(small_data, 64).val)
    for t in complete:
        arch = Arch.from_json(t.user_attrs["arch"])
        assert tiny.contains(arch) and table.cost(arch) == pytest.approx((t.values[1], t.values[2]))
        # a top-1 over the n validation images has the binomial standard error sqrt(a (1 - a) / (n - 1))
        a, se = t.values[0], t.user_attrs["accuracy_se"]
        assert t.values[1] <= median_budget and se == pytest.approx(math.sqrt(a * (1 - a) / (n - 1)), rel=1e-6)
    # the accuracy is the supernet's, recomputed here independently
    net = load_supernet(supernet)

    first = complete[0]
    assert accuracy(net, Arch.from_json(first.user_attrs["arch"]), load_data(small_data, 64)) == first.values[0]

    # an earlier front's member file (of a resumed run, or of the committed example in a fresh clone)
    # goes when the report is written; a file the user put beside them stays
    (run.out / "family").mkdir()
    (run.out / "family" / "0123456789.json").write_text("{}")
    (run.out / "family" / "notes.txt").write_text("mine")
    paths = write_search_report(run)
    front = pd.read_csv(paths["pareto.csv"])
    assert sorted(p.name for p in paths["family"].glob("*.json")) == sorted(f"{i}.json" for i in front["arch_id"])
    assert (paths["family"] / "notes.txt").read_text() == "mine"
    assert list(front.columns[:7]) == [
        "arch_id",
        "accuracy",
        "accuracy_se",
        "latency_ms",
        "energy_mj",
        "params_m",
        "macs_g",
    ]
    # the standard error of a top-1 on n images: sqrt(p (1 - p) / (n - 1)), p the top-1
    n = len(load_data(small_data, 64).val)
    assert np.allclose(front["accuracy_se"], np.sqrt(front["accuracy"] * (1 - front["accuracy"]) / (n - 1)))
    values = np.array([[t.values[0], t.values[1]] for t in complete])
    for row in front.itertuples():  # no evaluated arch dominates a front member
        assert not np.any((values[:, 0] >= row.accuracy) & (values[:, 1] < row.latency_ms - 1e-12))
        assert tiny.contains(Arch.from_json((paths["family"] / f"{row.arch_id}.json").read_text()))
    assert front_frame(run.study)["arch_id"].is_unique
    listed = json.loads(paths["pareto.json"].read_text())
    assert [m["arch_id"] for m in listed["family"]] == list(front["arch_id"])
    assert len(pd.read_csv(paths["trials.csv"])) == len(trials)
    report = paths["report.md"].read_text()
    assert f"latency <= {median_budget:g} ms" in report and "modelled, not measured" in report
    assert "| energy_mj (modelled) |" in report and "power_profile.xml" in report
    assert paths["pareto.png"].read_bytes().startswith(b"\x89PNG")


def test_an_interrupted_search_resumes_without_losing_or_repeating(tmp_path, supernet, median_budget, monkeypatch):
    out, config = tmp_path / "run", _config(supernet, median_budget, trials=6)
    evaluated: list[str] = []
    real = execution.AccuracyWorker.score

    def counting(self, arch, finetune=None):
        if len(evaluated) == 3:
            raise KeyboardInterrupt
        evaluated.append(arch.id)
        return real(self, arch, finetune)

    monkeypatch.setattr(execution.AccuracyWorker, "score", counting)
    with pytest.raises(KeyboardInterrupt):
        run_search(config, out, progress=False)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    cut = optuna.load_study(study_name="lglsearch", storage=storage)
    assert [t.state for t in cut.trials].count(TrialState.RUNNING) == 1
    presets_evaluated = 0  # the tiny space holds no preset
    assert len(evaluated) == 3 + presets_evaluated

    with pytest.raises(LglsearchError, match="already holds a search; continue it with --resume"):
        run_search(config, out, progress=False)
    with pytest.raises(LglsearchError, match=r"--resume with different arguments .*budget_ms"):
        run_search(_config(supernet, median_budget * 1.1, trials=6), out, resume=True, progress=False)

    evaluated.append("resumed")  # let evaluations through again
    run = run_search(config, out, resume=True, progress=False)
    trials = run.study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 6 and len(failed) == 1
    retry = [t for t in complete if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    fresh = [t for t in complete if not t.user_attrs.get("repeat")]
    assert len(evaluated) - 1 == len(fresh), "each evaluated trial was evaluated once"


def test_ray_workers_compute_the_same_accuracies(tmp_path, supernet, median_budget, small_data):
    local = run_search(_config(supernet, median_budget, trials=4), tmp_path / "local", progress=False)
    ray_run = run_search(_config(supernet, median_budget, trials=4, workers=2), tmp_path / "ray", progress=False)
    by_arch = {t.user_attrs["arch_id"]: t.values[0] for t in local.study.trials if t.state == TrialState.COMPLETE}
    remote = {t.user_attrs["arch_id"]: t.values[0] for t in ray_run.study.trials if t.state == TrialState.COMPLETE}
    assert len(remote) >= 3
    net, data = load_supernet(supernet), None

    data = load_data(small_data, 64)
    for arch_id, top1 in remote.items():
        expected = by_arch.get(arch_id)
        if expected is None:
            arch = next(
                Arch.from_json(t.user_attrs["arch"]) for t in ray_run.study.trials if t.user_attrs["arch_id"] == arch_id
            )
            expected = accuracy(net, arch, data)
        assert top1 == expected
    assert math.isclose(ray_run.provenance["workers"], 2)


def test_a_finetuned_search_scores_each_arch_after_its_own_steps(tmp_path, supernet, median_budget, small_data):
    out = tmp_path / "run"
    config = _config(supernet, median_budget, trials=2, finetune_steps=2, finetune_repeats=2)
    run = run_search(config, out, progress=False)
    complete = [t for t in run.study.get_trials() if t.state == TrialState.COMPLETE]

    net, data = load_supernet(supernet), load_data(small_data, 64)
    arch = Arch.from_json(complete[0].user_attrs["arch"])
    score = proxy_score(net, arch, data, finetune_steps=2, finetune_repeats=2)
    assert complete[0].values[0] == score.top1 == accuracy(net, arch, data, finetune_steps=2, finetune_repeats=2)
    assert complete[0].user_attrs["val_loss"] == score.loss, "each trial keeps its cross-entropy too"
    report = write_search_report(run)["report.md"].read_text()
    assert "fine-tuned 2 steps on their own (the mean of 2 fine-tunings" in report
    with pytest.raises(LglsearchError, match=r"--resume with different arguments .*finetune_repeats"):
        run_search(dataclasses.replace(config, finetune_repeats=3), out, resume=True, progress=False)


def test_refine_rescores_the_best_archs_fine_tuned_and_reports_their_front(
    tmp_path, supernet, median_budget, monkeypatch, small_data
):
    monkeypatch.setattr(study_module, "REFINE_STEPS", 2)  # the recipe's 60 steps, shortened for a test
    out = tmp_path / "run"
    run = run_search(_config(supernet, median_budget, trials=6), out, progress=False)
    complete = [t for t in run.study.get_trials() if t.state == TrialState.COMPLETE]
    # candidates come by non-domination rank with the inherited cross-entropy in place of top-1:
    # first exactly the archs that no other beats on cross-entropy and costs at once
    points = {t.user_attrs["arch_id"]: (t.user_attrs["val_loss"], *t.values[1:]) for t in complete}
    assert all(t.user_attrs["val_loss"] == points[t.user_attrs["arch_id"]][0] for t in complete), "repeats too"

    def beaten(arch_id: str) -> bool:
        mine = points[arch_id]
        return any(all(o <= m for o, m in zip(p, mine, strict=True)) and p != mine for p in points.values())

    first_rank = {i for i in points if not beaten(i)}
    chosen = candidates(run.study, len(first_rank))
    assert {a.id for a in chosen} == first_rank, "the first non-dominated rank by cross-entropy comes first"
    assert len(candidates(run.study, 100)) == len(points), "each distinct evaluated arch once"

    refined_run = run_search(_config(supernet, median_budget, trials=6, refine=4), out, resume=True, progress=False)
    assert len(refined_run.study.get_trials()) == len(run.study.get_trials()), "refining runs no new trials"
    stored = json.loads((out / REFINED_FILE).read_text())
    assert stored["recipe"] == {"finetune_steps": 2, "finetune_repeats": 2}
    assert set(refined_run.refined) == {a.id for a in candidates(run.study, 4)} == set(stored["scores"])

    net, data = load_supernet(supernet), load_data(small_data, 64)
    first = candidates(run.study, 1)[0]
    assert refined_run.refined[first.id] == proxy_score(net, first, data, finetune_steps=2, finetune_repeats=2)

    paths = write_search_report(refined_run)
    front = pd.read_csv(paths["pareto.csv"])
    inherited = {t.user_attrs["arch_id"]: t.values[0] for t in complete}
    assert set(front["arch_id"]) <= set(refined_run.refined)
    for row in front.itertuples():
        assert row.accuracy == pytest.approx(refined_run.refined[row.arch_id].top1)
        assert row.refined_loss == pytest.approx(refined_run.refined[row.arch_id].loss)
        assert row.inherited_accuracy == pytest.approx(inherited[row.arch_id])
    # the front is by refined cross-entropy and the costs: its members are exactly the refined archs
    # that no other refined arch beats in one of them while matching it in the rest
    costs = {t.user_attrs["arch_id"]: t.values[1:] for t in complete}

    def dominated(arch_id: str) -> bool:
        mine = [refined_run.refined[arch_id].loss, *costs[arch_id]]
        others = ([s.loss, *costs[i]] for i, s in refined_run.refined.items())
        return any(all(o <= m for o, m in zip(other, mine, strict=True)) and other != mine for other in others)

    assert set(front["arch_id"]) == {i for i in refined_run.refined if not dominated(i)}
    report = paths["report.md"].read_text()
    assert "refined top-1 %" in report and "inherited top-1 %" in report and "refined val loss" in report
    assert "fine-tuned 2 steps on their own (the mean of 2 fine-tunings" in report

    # a refined.json from before the cross-entropy was kept (top-1 alone) is scored again, not misread
    old = {"recipe": stored["recipe"], "scores": {i: s["top1"] for i, s in stored["scores"].items()}}
    (out / REFINED_FILE).write_text(json.dumps(old))
    rescored = run_search(_config(supernet, median_budget, trials=6, refine=4), out, resume=True, progress=False)
    assert rescored.refined == refined_run.refined
    assert all(isinstance(s, dict) for s in json.loads((out / REFINED_FILE).read_text())["scores"].values())

    def fail(*args, **kwargs):
        raise AssertionError("a refined arch was scored again")

    monkeypatch.setattr(execution.AccuracyWorker, "score", fail)
    again = run_search(_config(supernet, median_budget, trials=6, refine=4), out, resume=True, progress=False)
    assert again.refined == refined_run.refined
    assert all(isinstance(s, Score) for s in again.refined.values())


class _RecordingExecutor:
    """Scores an arch by its MACs at once and records what it was asked: the refinement's bookkeeping
    (sharing, order, resume) without training anything."""

    capacity = 2

    def __init__(self) -> None:
        self.submitted: list[Arch] = []

    def map_unordered(self, fn, items):
        for item in items:
            yield item, fn(self, item)  # its own worker

    def score(self, arch, finetune=None):
        assert finetune == (3, 2)
        self.submitted.append(arch)
        return Score(count(arch).macs_g, 1.0, 0.01, 0.02), 0.0

    def close(self):
        pass


def test_the_local_executor_draws_an_item_only_when_its_worker_is_free():
    """What lets the search ask Optuna for the next arch only once a worker can take it."""
    drawn = []

    def items():
        for i in range(3):
            drawn.append(i)
            yield i

    results = []
    for item, result in execution.LocalExecutor(worker=10).map_unordered(lambda worker, i: worker + i, items()):
        assert drawn == list(range(item + 1)), "nothing drawn ahead"
        results.append((item, result))
    assert results == [(0, 10), (1, 11), (2, 12)]


def test_refined_scores_are_shared_between_searches_of_one_supernet(tmp_path, tiny, capsys):
    from lglsearch.search.refine import refine, shared_scores

    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(tiny.sample(rng) for _ in range(6)))[:5]
    shared = shared_scores(tmp_path / "supernet", data=None, seed=0, steps=3, repeats=2, score_images=2000)
    assert shared != shared_scores(tmp_path / "supernet", data=None, seed=1, steps=3, repeats=2, score_images=2000)
    assert shared != shared_scores(tmp_path / "supernet", data=None, seed=0, steps=60, repeats=2, score_images=2000)
    assert shared != shared_scores(tmp_path / "supernet", data=None, seed=0, steps=3, repeats=2, score_images=0)

    first = _RecordingExecutor()
    scores = refine(archs[:3], first, tmp_path, steps=3, repeats=2, shared=shared, progress=False)
    assert set(scores) == {a.id for a in archs[:3]}
    macs = [count(a).macs for a in first.submitted]
    assert macs == sorted(macs, reverse=True), "the largest are refined first"

    second_out = tmp_path / "second"
    second_out.mkdir()
    second = _RecordingExecutor()
    again = refine(archs[1:], second, second_out, steps=3, repeats=2, shared=shared, progress=False)
    assert {a.id for a in second.submitted} == {a.id for a in archs[3:]}, "archs another search refined are reused"
    assert {a.id for a in archs[1:3]} <= set(again)
    assert all(again[a.id] == scores[a.id] for a in archs[1:3]), "reused as scored"
    stored = json.loads((second_out / REFINED_FILE).read_text())["scores"]
    assert set(stored) == {a.id for a in archs[1:]}, "the run keeps every score it used"
    assert set(json.loads(shared.read_text())["scores"]) == {a.id for a in archs}

    # a supernet directory that cannot be written stops the sharing, not the refinement
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    third_out = tmp_path / "third"
    third_out.mkdir()
    alone = refine(archs[:2], _RecordingExecutor(), third_out, steps=3, repeats=2, shared=blocked / "x.json")
    assert set(alone) == {a.id for a in archs[:2]}
    assert "refined scores not shared" in capsys.readouterr().err


def test_a_resumed_search_keeps_the_default_supernet_that_scored_it(tmp_path, supernet, median_budget, monkeypatch):
    import lglsearch.train.supernet as supernet_module
    from lglsearch.search.study import RUN_FILE

    out = tmp_path / "run"
    run_search(_config(supernet, median_budget, trials=3), out, progress=False)
    record = json.loads((out / RUN_FILE).read_text())
    assert record["supernet_dir"] == str(supernet.resolve())
    # as a search without --supernet records it; the default recipe has changed since (a new cache key)
    record["identity"]["supernet"], record["config"]["supernet"] = "default", None
    (out / RUN_FILE).write_text(json.dumps(record))

    def no_training(*args, **kwargs):
        raise AssertionError("the resumed search trained today's default supernet")

    monkeypatch.setattr(supernet_module, "train_supernet", no_training)
    default = dataclasses.replace(_config(supernet, median_budget, trials=4), supernet=None)
    resumed = run_search(default, out, resume=True, progress=False)
    assert resumed.provenance["supernet"] == str(supernet.resolve())
    assert len(resumed.study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert json.loads((out / RUN_FILE).read_text())["config"]["supernet"] is None, "what a later --resume asks"

    record["supernet_dir"] = str(tmp_path / "gone")
    (out / RUN_FILE).write_text(json.dumps(record))
    with pytest.raises(LglsearchError, match=r"default supernet of then, .*gone, which is gone"):
        run_search(dataclasses.replace(default, trials=5), out, resume=True, progress=False)


def test_runs_from_before_the_finetune_options_still_resume(tmp_path):
    from lglsearch.search.study import RUN_FILE, STUDY_FILE, _check_run_dir

    identity = {"device": DEVICE, "finetune_steps": 0, "finetune_repeats": 1}
    (tmp_path / STUDY_FILE).touch()
    (tmp_path / RUN_FILE).write_text(json.dumps({"identity": {"device": DEVICE}}))  # an older run.json
    _check_run_dir(tmp_path, identity, resume=True)
    with pytest.raises(LglsearchError, match="finetune_steps: 0 then, 60 now"):
        _check_run_dir(tmp_path, identity | {"finetune_steps": 60}, resume=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "pixel99"], "pixel99"),
        (["--device", "host", "--objectives", "accuracy,energy"], "no energy"),
        (["--device", DEVICE, "--budget-ms", "0.1"], "below the cheapest arch of space 'tiny'"),
        (["--device", DEVICE, "--ray-address", "127.0.0.1:9"], "does not answer"),
        (["--device", DEVICE, "--resume"], "nothing to resume"),
        (["--device", DEVICE, "--finetune-steps", "-1"], "--finetune-steps: must be an integer >= 0"),
        (["--device", DEVICE, "--finetune-steps", "60", "--finetune-repeats", "0"], "--finetune-repeats: must be"),
        (["--device", DEVICE, "--refine", "-1"], "--refine: must be an integer >= 0"),
        (["--device", DEVICE, "--workers", "0"], "--workers: must be an integer >= 1"),
        (["--device", DEVICE, "--refine", "8", "--finetune-steps", "60"], "pass one of them"),
    ],
)
def test_bad_input_fails_before_any_training(tmp_path, capsys, args, message):
    try:
        code = main(["search", "--space", "tiny", "--out", str(tmp_path / "run"), *args])
    except SystemExit as parsed:  # refused by the parser, as ranges are
        code = parsed.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists(), "no supernet was trained"


def test_cli_search_end_to_end(tmp_path, capsys, supernet, median_budget):
    out = tmp_path / "run"
    argv = ["search", "--device", DEVICE, "--budget-ms", str(median_budget), "--space", "tiny", "--trials", "3"]
    argv += ["--population", "4", "--workers", "1", "--supernet", str(supernet), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    front = pd.read_csv(out / "pareto.csv")
    assert f"{len(front)} Pareto-optimal archs on {DEVICE}" in printed and "; energy modelled)" in printed
    assert all(arch_id in printed for arch_id in front["arch_id"])
    assert main([*argv[:-2], "--out", str(out), "--resume", "--trials", "4"]) == 0  # extends the finished search
    assert (pd.read_csv(out / "trials.csv")["state"] == "COMPLETE").sum() == 4


def test_score_is_the_estimate_a_trial_records(tmp_path, capsys, supernet, median_budget, small_data):
    # 100 of the 500 validation images: the subset the trials and `score` take must be the same one
    run = run_search(_config(supernet, median_budget, trials=3, score_images=100), tmp_path / "run", progress=False)
    complete = run.study.get_trials(states=(TrialState.COMPLETE,))
    assert run.provenance["score_images"] == 100
    report = write_search_report(run)["report.md"].read_text()
    assert "scored on a class-balanced 100 of the validation images" in report
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps([json.loads(t.user_attrs["arch"]) for t in complete]))
    first = Arch.from_json(complete[0].user_attrs["arch"])
    net, data = load_supernet(supernet), load_data(small_data, 64)
    on_subset = proxy_score(net, first, data, score_images=100)
    assert complete[0].values[0] == on_subset.top1 and complete[0].user_attrs["accuracy_se"] == on_subset.top1_se
    on_all = proxy_score(net, first, data)
    assert on_all.top1_se < on_subset.top1_se, "five times the images, a smaller standard error"
    argv = ["score", "--space", "tiny", "--supernet", str(supernet), "--archs", str(archs), "--score-images", "100"]
    argv.append("--json")
    assert main([*argv, "--arch", first.to_json()]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["arch_id"] for r in rows] == [first.id] + [t.user_attrs["arch_id"] for t in complete]
    for row, trial in zip(rows, [complete[0], *complete], strict=True):
        assert row["accuracy"] == trial.values[0]
        assert row["accuracy_se"] == trial.user_attrs["accuracy_se"] and row["accuracy_se"] > 0
        assert row["loss"] == trial.user_attrs["val_loss"] and row["loss_se"] == trial.user_attrs["val_loss_se"]
    assert main(argv[:-1]) == 0
    printed = capsys.readouterr().out
    assert f"{100 * rows[0]['accuracy']:.2f}% +- {100 * rows[0]['accuracy_se']:.2f}" in printed


def test_score_bad_input_is_one_line_before_any_training(tmp_path, capsys, supernet):
    not_json, not_archs = tmp_path / "bad.json", tmp_path / "list.json"
    not_json.write_text("[{")
    not_archs.write_text(json.dumps([{"stages": "three"}]))
    tiny_arch = load_space("tiny").smallest().to_json()
    cases = [
        (["--space", "tiny", "--arch", "edgevit_s"], "is outside the space 'tiny'"),
        (["--space", "tiny", "--archs", str(not_json)], "is not JSON"),
        (["--space", "tiny", "--archs", str(tmp_path / "nowhere.json")], "cannot read it"),
        (["--space", "tiny", "--archs", str(not_archs)], "item 0 is not an arch"),
        (["--arch", "edgevit_xxs", "--supernet", str(supernet)], "was trained for space 'tiny', not 'edgevit'"),
        (["--space", "tiny", "--arch", tiny_arch, "--supernet", str(supernet), "--data", str(tmp_path)], "not on"),
        (["--space", "tiny"], "nothing to score"),
    ]
    for args, message in cases:
        assert main(["score", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "cache").exists(), "no supernet was trained"


def test_reports_claim_no_domination_within_two_standard_errors():
    from lglsearch.report import _dominated_by

    front = pd.DataFrame(
        {"arch_id": ["a"], "accuracy": [0.805], "accuracy_se": [0.005], "latency_ms": [5.0], "energy_mj": [1.0]}
    )
    preset = pd.Series({"accuracy": 0.80, "accuracy_se": 0.005, "latency_ms": 9.0, "energy_mj": 2.0})
    close = _dominated_by(front, preset, ("accuracy", "latency"))
    assert close.startswith("not distinguishable on this proxy: a") and "within two standard errors (1.41)" in close
    far = _dominated_by(front.assign(accuracy=0.83), preset, ("accuracy", "latency"))
    assert far == "a (83.00%, 5.00 ms), +3.00 ± 0.71 points"
    assert _dominated_by(front.assign(latency_ms=10.0), preset, ("accuracy", "latency")) == "none found"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_text('{"recipe": {"finetune_steps": 3, "fine'), "not JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not JSON"),
        (lambda p: p.write_text("[1, 2]"), "not a recipe with its scores"),
        (lambda p: p.mkdir(), "Is a directory"),
    ],
)
def test_an_unreadable_refined_json_is_refused_and_left_as_it_is(tmp_path, tiny, damage, reason):
    """It held finished scores: taken as empty, the refinement would write over it without them."""
    from lglsearch.search.refine import refine

    path = tmp_path / REFINED_FILE
    damage(path)
    before = path.read_bytes() if path.is_file() else None
    executor = _RecordingExecutor()
    archs = [tiny.smallest(), tiny.largest()]
    with pytest.raises(LglsearchError) as caught:
        refine(archs, executor, tmp_path, steps=3, repeats=2, progress=False)
    message = str(caught.value)
    assert f"the refined scores in {path} are unreadable" in message and "move it away to refine" in message
    assert reason in message and "\n" not in message, "one line, naming the file, why and the fix"
    assert executor.submitted == [], "nothing scored"
    assert (path.read_bytes() if path.is_file() else None) == before and path.exists(), "the file is untouched"


def test_a_resumed_refinement_refuses_an_unreadable_refined_json_before_any_work(tmp_path, median_budget, monkeypatch):
    out = tmp_path / "run"
    config = SearchConfig(device=DEVICE, budget_ms=median_budget, space="tiny", trials=2, population=4, workers=1)
    run_search(dataclasses.replace(config, noop=True), out, progress=False)
    (out / REFINED_FILE).write_text("{")

    def no_work(*args, **kwargs):
        raise AssertionError("the supernet was prepared before the refined scores were read")

    monkeypatch.setattr(study_module, "prepare_supernet", no_work)
    with pytest.raises(LglsearchError, match=rf"the refined scores in {out / REFINED_FILE} are unreadable"):
        run_search(dataclasses.replace(config, noop=True, refine=2), out, resume=True, progress=False)
    assert (out / REFINED_FILE).read_text() == "{"


def test_a_resume_refuses_an_unreadable_presets_json_and_leaves_it(tmp_path, median_budget):
    out = tmp_path / "run"
    config = SearchConfig(device=DEVICE, budget_ms=median_budget, space="tiny", trials=2, population=4, workers=1)
    run_search(dataclasses.replace(config, noop=True), out, progress=False)
    (out / PRESETS_FILE).write_text("[{")
    with pytest.raises(LglsearchError, match=r"presets.json is unreadable, not JSON .*delete it and resume") as err:
        run_search(dataclasses.replace(config, noop=True, trials=3), out, resume=True, progress=False)
    assert "\n" not in str(err.value) and (out / PRESETS_FILE).read_text() == "[{"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_text('{"identity": {"device": '), "is unreadable, not JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00"), "is unreadable, not JSON"),
        (lambda p: p.write_text('{"config": {}}'), "is not a search's record (it holds no identity)"),
        (lambda p: p.mkdir(), "cannot read"),
    ],
)
def test_an_unreadable_run_json_is_one_line_naming_it(tmp_path, capsys, damage, message):
    from lglsearch.search.study import RUN_FILE, STUDY_FILE

    out = tmp_path / "run"
    out.mkdir()
    (out / STUDY_FILE).write_text("")
    damage(out / RUN_FILE)
    before = (out / RUN_FILE).read_bytes() if (out / RUN_FILE).is_file() else None
    code = main(["search", "--device", DEVICE, "--space", "tiny", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{out / RUN_FILE}" in err and message in err
    assert "restore it, or start a new search with another --out" in err, "the fix"
    assert ((out / RUN_FILE).read_bytes() if (out / RUN_FILE).is_file() else None) == before
    assert not (tmp_path / "cache").exists(), "no supernet was trained"


def test_a_one_worker_search_is_repeatable(tmp_path, supernet, median_budget):
    """With one worker, trials finish in the order they were asked: the same seed, the same study
    (with several Ray workers the order depends on timing, and so does NSGA-II's next generation)."""
    runs = [
        run_search(_config(supernet, median_budget, trials=5), tmp_path / f"run{i}", progress=False) for i in (0, 1)
    ]
    studies = [[(t.user_attrs["arch_id"], t.values) for t in run.study.get_trials()] for run in runs]
    assert studies[0] == studies[1] and len(studies[0]) >= 5

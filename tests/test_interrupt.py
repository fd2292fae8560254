"""Kill -9 and resume: each long job, killed at a random point after some progress, ends as an
uninterrupted run does (issue 20, "Nothing lost").

Each job runs as `python -m lglsearch` in a subprocess and gets SIGKILL once a file it writes shows
finished work, after a seeded random delay; it is resumed, and the uninterrupted reference is run,
in this process (same torch thread count). The tiny space and a 240-image IDX data set keep an
evaluation or a training step to a fraction of a second, so each job is still running when killed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

import lglsearch.cost.table as table_module
import lglsearch.search.execution as execution
from lglsearch.ablate import run_ablation
from lglsearch.cli import main
from lglsearch.cost.build import build_table
from lglsearch.cost.ops import space_ops
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable, table_path
from lglsearch.errors import LglsearchError
from lglsearch.search.refine import REFINED_FILE, candidates
from lglsearch.search.study import STUDY_FILE, SearchConfig, _cut_torn_line, _JournalLock, run_search
from lglsearch.space import Arch, load_space
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.supernet import CHECKPOINT, train_supernet
from tests.conftest import write_idx_subset

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")

DEVICE = "snapdragon888"  # shipped, holds every key of the tiny space
BUDGET = 1.2  # ms: rejects part of the tiny space (0.87-1.4 ms on this table)
TRIALS = 10
SEARCH = ["--device", DEVICE, "--budget-ms", str(BUDGET), "--space", "tiny", "--population", "4", "--workers", "1"]
SEARCH += ["--seed", "7", "--trials", str(TRIALS)]
FAST = OrtRunner(warmup=1, runs=4, rounds=1)
# no sparse attention: 3 variants of lgl-components to train, every op key in the shipped table
BASE = Arch.from_dict(
    {
        "resolution": 64,
        "num_classes": 10,
        "stages": [
            {"width": w, "heads": h, "sr": 1, "mlp_ratio": 2, "kinds": k}
            for w, h, k in ((16, 1, ["local"]), (32, 1, ["local"]), (48, 2, ["lgl", "global"]), (64, 4, ["global"]))
        ],
    }
)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    # the CPU and one torch thread, here and in the subprocesses: the same floating-point sums in
    # both, and on 2 busy cores ten times faster than two threads waiting for each other (2.5 s vs 29 s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("LGLSEARCH_CACHE", str(path))
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("CUDA_VISIBLE_DEVICES", "")
        patch.setattr(torch.cuda, "is_available", lambda: False)
        yield path
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Fashion-MNIST IDX files of 16 training and 8 validation images per class, from the embedded subset."""
    return write_idx_subset(tmp_path_factory.mktemp("data"), 16, 8)


@pytest.fixture(scope="module")
def supernet(tmp_path_factory, data) -> Path:
    directory = tmp_path_factory.mktemp("supernet")
    config = TrainConfig(space="tiny", data=str(data), epochs=1, batch_size=16, max_steps_per_epoch=2)
    train_supernet(config, directory, progress=False)
    return directory


@pytest.fixture(scope="module")
def reference_search(tmp_path_factory, supernet) -> Path:
    """The uninterrupted search every killed one is compared with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_search(_search_config(supernet), out, progress=False)
    return out


def _search_config(supernet: Path | None, **changes) -> SearchConfig:
    """The config the CLI makes of SEARCH."""
    base = {"device": DEVICE, "budget_ms": BUDGET, "space": "tiny", "trials": TRIALS, "population": 4, "seed": 7}
    return SearchConfig(**base | changes, workers=1, supernet=str(supernet) if supernet else None)


# -- starting and killing ------------------------------------------------------------------------


def _launch(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "lglsearch", *argv], stdout=f, stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float, log: Path, timeout: float = 300):
    """SIGKILL `proc` `delay` seconds after `ready()` first holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the job ended (or stalled) before its progress point:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the job finished before the kill:\n{log.read_text()[-3000:]}"


def _trials(journal: Path) -> list[FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="lglsearch", storage=storage).get_trials()


def _complete(journal: Path) -> int:
    if not journal.is_file():
        return 0
    try:
        return sum(t.state == TrialState.COMPLETE for t in _trials(journal))
    except KeyError:  # the study is not created yet
        return 0


# -- the jobs --------------------------------------------------------------------------------------


def test_a_killed_search_resumes_to_the_uninterrupted_study(tmp_path, supernet, reference_search):
    rng = random.Random(1)
    out, log = tmp_path / "run", tmp_path / "search.log"
    argv = ["search", *SEARCH, "--supernet", str(supernet), "--out", str(out)]
    after = rng.randint(2, TRIALS - 5)
    proc = _launch(argv, log)
    _kill_when(proc, lambda: _complete(out / STUDY_FILE) >= after, rng.uniform(0, 0.3), log)
    cut = _trials(out / STUDY_FILE)
    reference = _trials(reference_search / STUDY_FILE)

    # up to the kill, the killed run did what the uninterrupted one did, trial by trial
    assert sum(t.state == TrialState.COMPLETE for t in cut) >= after
    for t in cut:
        ref = reference[t.number]
        assert t.params.items() <= ref.params.items(), t.number  # a trial killed while suggesting has fewer
        if t.state != TrialState.RUNNING:
            assert (t.state, t.params, t.values) == (ref.state, ref.params, ref.values), t.number

    assert main([*argv, "--resume"]) == 0
    done = _trials(out / STUDY_FILE)
    # nothing the killed run finished was lost or redone; what it had running, failed and ran once more
    for t in cut:
        now = done[t.number]
        if t.state == TrialState.RUNNING:
            assert now.state == TrialState.FAIL
            (retry,) = [r for r in done if r.user_attrs.get("retry_of") == t.number]
            assert t.params.items() <= retry.params.items()
            ref = reference[t.number]
            if retry.params == ref.params:
                assert (retry.state, retry.values) == (ref.state, ref.values)
        else:
            assert (now.state, now.params, now.values, now.user_attrs) == (t.state, t.params, t.values, t.user_attrs)
    assert [t.number for t in done if t.state == TrialState.FAIL] == [
        t.number for t in cut if t.state == TrialState.RUNNING
    ]
    # the uninterrupted study's length; no arch evaluated twice; scores are the arch's, as uninterrupted
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS == sum(t.state == TrialState.COMPLETE for t in reference)
    evaluated = [t.user_attrs["arch_id"] for t in complete if not t.user_attrs.get("repeat")]
    assert len(evaluated) == len(set(evaluated))
    by_arch = {t.user_attrs["arch_id"]: t.values for t in reference if t.state == TrialState.COMPLETE}
    both = [t for t in complete if t.user_attrs["arch_id"] in by_arch]
    assert len(both) >= after and all(t.values == by_arch[t.user_attrs["arch_id"]] for t in both)


def test_a_killed_table_build_measures_no_op_twice(tmp_path, cache, capsys):
    rng = random.Random(2)
    log = tmp_path / "lut.log"
    argv = ["lut", "build", "--device", "host", "--space", "tiny", "--runs", "4", "--rounds", "1"]
    path = cache / "latency_tables" / "host.csv"
    keys = space_ops(load_space("tiny"))
    assert len(keys) > 24, "two chunks of 24: the kill lands in the second"
    proc = _launch(argv, log)
    _kill_when(proc, lambda: path.with_suffix(".json").is_file(), rng.uniform(0, 0.3), log)
    at_kill = pd.read_csv(path, index_col="key")  # written atomically: whole measurements only

    assert main(argv) == 0
    measured = int(re.search(r"(\d+) measured now", capsys.readouterr().out)[1])
    assert measured == len(keys) - len(at_kill), "only the ops without a measurement were measured"
    table = CostTable.load("host")
    assert sorted(table.frame.index) == sorted(keys)  # every key, once (load refuses duplicates)
    assert pd.read_csv(path)["key"].is_unique
    kept = pd.read_csv(path, index_col="key").loc[at_kill.index]
    pd.testing.assert_frame_equal(kept, at_kill)  # the measurements made before the kill, unchanged
    # as an uninterrupted build: one speed factor per chunk of 24, the space recorded
    assert len(table.meta["speed_factors"]) == 2 and table.meta["spaces"] == ["tiny"]
    assert not (path.parent / ".host.csv.pending").exists(), "the last save was finished"


def _started(log: Path) -> int:
    """The last epoch the training's progress bar shows started (the ones before it are saved)."""
    return max((int(n) for n in re.findall(r"supernet epoch (\d+)/", log.read_text())), default=0)


def test_a_killed_supernet_training_loses_at_most_its_epoch_and_ends_at_the_same_weights(tmp_path, data, capsys):
    rng = random.Random(3)
    out, log = tmp_path / "supernet", tmp_path / "train.log"
    argv = ["supernet", "train", "--space", "tiny", "--data", str(data), "--smoke-test", "--epochs", "8"]
    argv += ["--batch-size", "16", "--out", str(out)]
    after = rng.randint(2, 3)
    proc = _launch(argv, log)
    _kill_when(proc, lambda: _started(log) >= after, rng.uniform(0, 0.3), log)
    saved = torch.load(out / CHECKPOINT, weights_only=True)["epoch"]
    assert saved in (_started(log) - 1, _started(log)), "every epoch before the one in progress was kept"

    assert main(argv) == 0
    assert f"resuming the supernet at epoch {saved + 1}" in capsys.readouterr().err
    config = TrainConfig(space="tiny", data=str(data), epochs=8, batch_size=16, max_steps_per_epoch=2)
    train_supernet(config, tmp_path / "reference", progress=False)
    resumed = torch.load(out / CHECKPOINT, weights_only=True)
    straight = torch.load(tmp_path / "reference" / CHECKPOINT, weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 8
    # CPU training is deterministic for a seed: the same weights and optimizer state, bit for bit
    assert resumed["net"].keys() == straight["net"].keys()
    for key, value in straight["net"].items():
        assert torch.equal(resumed["net"][key], value), key
    for param, state in straight["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][param][name], value), (param, name)


def test_a_killed_ablation_loses_no_variant(tmp_path, data, capsys):
    rng = random.Random(4)
    out, log = tmp_path / "ablation", tmp_path / "ablate.log"
    argv = ["ablate", "--study", "lgl-components", "--base", BASE.to_json(), "--space", "tiny", "--data", str(data)]
    argv += ["--smoke-test", "--epochs", "6", "--batch-size", "16", "--device", DEVICE, "--out", str(out)]

    def results() -> dict:
        try:
            return json.loads((out / "results.json").read_text())
        except FileNotFoundError:
            return {"trained": {}}

    after = rng.randint(1, 2)
    proc = _launch(argv, log)
    _kill_when(proc, lambda: len(results()["trained"]) >= after, rng.uniform(0, 0.3), log)
    at_kill = results()

    assert main(argv) == 0
    resumed = results()
    config = TrainConfig(data=str(data), epochs=6, batch_size=16, max_steps_per_epoch=2)
    reference = run_ablation(
        "lgl-components", BASE, device=DEVICE, out=tmp_path / "ref", space=load_space("tiny"), config=config,
        runner=FAST, progress=False,
    )  # fmt: skip
    # the variants finished before the kill are kept as they were (their seconds too: not trained again)
    assert len(at_kill["trained"]) >= after
    for arch_id, trained in at_kill["trained"].items():
        assert resumed["trained"][arch_id] == trained
    for arch_id, priced in at_kill["priced"].items():
        assert resumed["priced"][arch_id] == priced  # host timings too: not measured again
    # every variant, with the accuracy an uninterrupted study gives it
    rows = pd.read_csv(out / "ablation.csv")
    done = reference.rows[reference.rows["status"] == "done"]
    assert list(rows["variant"]) == list(reference.rows["variant"]) and len(done) == 3
    assert set(resumed["trained"]) == set(done["arch_id"])
    for row in done.itertuples():
        assert resumed["trained"][row.arch_id]["accuracy"] == row.accuracy, row.variant
        assert resumed["trained"][row.arch_id]["accuracy_se"] == row.accuracy_se, row.variant
        assert resumed["priced"][row.arch_id]["latency_ms"] == row.latency_ms


def _scores(out: Path) -> dict:
    try:
        return json.loads((out / REFINED_FILE).read_text())["scores"]
    except FileNotFoundError:
        return {}


def test_a_killed_refinement_loses_and_repeats_no_score(tmp_path, supernet, reference_search, monkeypatch):
    rng = random.Random(5)
    k = 5
    cut, ref, log = tmp_path / "cut", tmp_path / "ref", tmp_path / "refine.log"
    shutil.copytree(reference_search, cut)
    shutil.copytree(reference_search, ref)
    shared = supernet / "refined"  # scores shared between the searches of one supernet: none yet
    shutil.rmtree(shared, ignore_errors=True)
    argv = ["search", *SEARCH, "--supernet", str(supernet), "--resume", "--refine", str(k)]
    # the CLI's recipe (60 fine-tuning steps) stops at the end of one pass over this data: 2 steps
    after = rng.randint(1, 2)
    proc = _launch([*argv, "--out", str(cut)], log)
    _kill_when(proc, lambda: len(_scores(cut)) >= after, rng.uniform(0, 0.3), log)
    at_kill = _scores(cut)

    scored: list[str] = []
    real = execution.AccuracyWorker.score

    def recording(self, arch, finetune=None):
        scored.append(arch.id)
        return real(self, arch, finetune)

    monkeypatch.setattr(execution.AccuracyWorker, "score", recording)
    assert main([*argv, "--out", str(cut)]) == 0
    resumed = _scores(cut)
    monkeypatch.undo()

    shutil.rmtree(shared)  # the reference scores every arch itself
    straight = run_search(_search_config(supernet, refine=k), ref, resume=True, progress=False)
    reference = _scores(ref)

    assert len(at_kill) >= after
    assert set(reference) == {a.id for a in candidates(straight.study, k)} and len(reference) == k
    assert resumed == reference, "every score, as an uninterrupted refinement gives it"
    assert sorted(scored) == sorted(set(reference) - set(at_kill)), "the resume scored only the missing archs"


# -- what a kill can leave half done -----------------------------------------------------------------


def test_the_journal_lock_dies_with_its_search(tmp_path):
    """A search killed while it appends to its journal leaves no lock for its resume to wait out
    (Optuna's default lock file stays, and the next writer waits 30 s before breaking it)."""
    journal = tmp_path / STUDY_FILE
    child = os.fork()
    if child == 0:  # the killed search: holds the lock, dies
        _JournalLock(journal).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    lock = _JournalLock(journal)
    taker = threading.Thread(target=lock.acquire, daemon=True)
    taker.start()
    taker.join(10)
    assert not taker.is_alive(), "the dead search's lock still held the journal"
    lock.release()


def test_a_torn_journal_line_is_dropped_so_the_resumed_study_stays_readable(tmp_path, capsys):
    journal = tmp_path / STUDY_FILE
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="lglsearch", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    whole = journal.read_bytes()
    torn = whole + b'{"op_code": 4, "worker_id": "a", "study_id": 0, "datetime_st'  # a write cut short
    broken = tmp_path / "broken.journal"
    broken.write_bytes(torn)
    journal.write_bytes(torn)

    def add_trial_and_read(path: Path) -> int:
        study = optuna.load_study(study_name="lglsearch", storage=JournalStorage(JournalFileBackend(str(path))))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        fresh = JournalStorage(JournalFileBackend(str(path)))
        return len(optuna.load_study(study_name="lglsearch", storage=fresh).trials)

    # uncut, the next append fuses with the torn line: Optuna fails at the next trial (or the next read)
    with pytest.raises((AttributeError, ValueError)):
        add_trial_and_read(broken)
    _cut_torn_line(journal)
    assert journal.read_bytes() == whole and "unfinished last line" in capsys.readouterr().err
    assert add_trial_and_read(journal) == 4
    _cut_torn_line(journal)  # a whole journal is left alone
    assert add_trial_and_read(journal) == 5


def test_a_search_killed_before_its_study_was_written_resumes(tmp_path):
    """Killed between creating its journal and writing the study into it: the journal is empty."""
    out = tmp_path / "run"
    config = _search_config(None, trials=3, noop=True)
    run_search(config, out, progress=False)
    (out / STUDY_FILE).write_bytes(b"")
    (out / "presets.json").unlink()  # written after the study
    run = run_search(config, out, resume=True, progress=False)
    assert len(run.study.get_trials(states=(TrialState.COMPLETE,))) == 3


class _Killed(BaseException):
    """Stands for SIGKILL at one point of a save: nothing after it runs, no handler sees it."""


@pytest.mark.parametrize("chunk", [1, 2])
def test_a_table_build_killed_between_its_csv_and_json_keeps_the_chunk(tmp_path, monkeypatch, chunk):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path))
    keys = space_ops(load_space("tiny"))[:6]
    real = table_module.atomic_write
    writes = {"json": 0}

    def killed_at_json(path, text):
        if str(path).endswith(".json"):
            writes["json"] += 1
            if writes["json"] == chunk:
                raise _Killed
        real(path, text)

    monkeypatch.setattr(table_module, "atomic_write", killed_at_json)
    with pytest.raises(_Killed):
        build_table("host", keys, runner=FAST, chunk=3, progress=False)
    monkeypatch.setattr(table_module, "atomic_write", real)
    path = table_path("host")
    csv = pd.read_csv(path, index_col="key")
    assert len(csv) == 3 * chunk, "the chunk's CSV was written"
    if chunk == 2:  # the old code refused this pair, and the rebuild it advised could not start either
        with pytest.raises(LglsearchError, match="interrupted write or hand edit"):
            CostTable.load("host")

    report = build_table("host", keys, runner=FAST, chunk=3, progress=False)
    assert report.measured == 6 - 3 * chunk, "the chunk written before the kill was not measured again"
    table = CostTable.load("host")
    assert sorted(table.frame.index) == sorted(keys) and len(table.meta["speed_factors"]) == 2
    pd.testing.assert_frame_equal(table.frame.loc[csv.index], csv.apply(pd.to_numeric), check_dtype=False)

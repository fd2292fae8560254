"""Importing and using lglsearch changes nothing of the caller's: random state, threads, backends,
log levels stay as the caller set them."""

from __future__ import annotations

import subprocess
import sys

import torch

from lglsearch.train.recipe import TrainConfig

QUICK = TrainConfig(space="tiny", epochs=2, batch_size=16, max_steps_per_epoch=2, warmup_epochs=0)


def test_standalone_training_leaves_the_callers_random_state():
    from lglsearch.space import load_space
    from lglsearch.train.data import load_data
    from lglsearch.train.standalone import train_standalone

    data = load_data(None, 64)
    arch = load_space("tiny").smallest()
    weights = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before = torch.random.get_rng_state()
        threads = torch.get_num_threads()
        model = train_standalone(arch, data, QUICK, progress=False)
        assert torch.equal(torch.random.get_rng_state(), before)
        assert torch.get_num_threads() == threads
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])  # seeded by its config, whatever the caller's state


def test_importing_the_report_keeps_matplotlibs_backend():
    code = (
        "import matplotlib; matplotlib.use('svg'); import lglsearch.report, lglsearch.ablate; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "svg"


def test_supernet_training_and_finetuning_leave_the_callers_random_state(tmp_path):
    import optuna

    from lglsearch.search.study import SearchConfig, run_search
    from lglsearch.train.scoring import finetune
    from lglsearch.train.supernet import train_supernet

    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    trained = train_supernet(QUICK, tmp_path / "supernet", progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    model = trained.net.extract(trained.net.space.smallest())  # building a module draws, as in torch
    before = torch.random.get_rng_state()
    finetune(model, trained.data, 2, batch_size=16)
    assert torch.equal(torch.random.get_rng_state(), before)

    optuna.logging.set_verbosity(optuna.logging.DEBUG)  # the caller's choice, kept through a search
    try:
        config = SearchConfig(device="snapdragon888", space="tiny", trials=2, population=2, workers=1, noop=True)
        run_search(config, tmp_path / "run", progress=False)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)

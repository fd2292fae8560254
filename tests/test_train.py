"""Supernet training: resumable, cached, deterministic; BN-recalibrated accuracy (tiny space)."""

from __future__ import annotations

import json

import pytest
import torch

import lglsearch.train.supernet as trainer
from lglsearch.errors import LglsearchError
from lglsearch.train.data import loader
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.scoring import accuracy
from lglsearch.train.supernet import load_supernet, train_supernet

QUICK = TrainConfig(space="tiny", epochs=2, batch_size=16, max_steps_per_epoch=2, n_random=1)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = train_supernet(QUICK, tmp_path / "a", progress=False)
    assert straight.epochs_done == 2 and (tmp_path / "a" / "checkpoint.pt").is_file()

    calls = {"n": 0}
    real_step = trainer._sandwich_step

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "_sandwich_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(QUICK, tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1  # epoch 1 kept
    monkeypatch.setattr(trainer, "_sandwich_step", real_step)
    resumed = train_supernet(QUICK, tmp_path / "b", progress=False)
    for key, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_trained_supernets_are_cached_by_config():
    first = train_supernet(QUICK, progress=False)
    stamp = (first.directory / "checkpoint.pt").stat().st_mtime_ns
    again = train_supernet(QUICK, progress=False)
    assert again.directory == first.directory and (first.directory / "checkpoint.pt").stat().st_mtime_ns == stamp
    other = train_supernet(TrainConfig(**{**QUICK.__dict__, "seed": 1, "epochs": 1}), progress=False)
    assert other.directory != first.directory
    assert json.loads((first.directory / "config.json").read_text())["space"] == "tiny"


def test_without_distillation_every_arch_of_a_step_learns_the_labels():
    import numpy as np
    import torch.nn.functional as F

    from lglsearch.nn.supernet import Supernet
    from lglsearch.space import load_space

    space = load_space("tiny").with_resolution(64, 10)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 3, 7, 9])
    net = Supernet(space).train()
    torch.manual_seed(0)
    archs = [space.largest(), space.smallest(), space.sample(np.random.default_rng(5))]
    with torch.no_grad():  # the three losses, one arch at a time (no dropout in these nets)
        expected = sum(float(F.cross_entropy(net.set_arch(a)(images), labels)) for a in archs)
    total = trainer._sandwich_step(net, space, images, labels, np.random.default_rng(5), 1, distill=False)
    assert total == pytest.approx(expected, rel=1e-5)
    labels_grad = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad(set_to_none=True)
    trainer._sandwich_step(net, space, images, labels, np.random.default_rng(5), 1, distill=True)
    distilled_grad = [p.grad for p in net.parameters() if p.grad is not None]
    assert any(not torch.allclose(a, b) for a, b in zip(labels_grad, distilled_grad, strict=True))


def test_distilling_supernets_keep_the_keys_they_had_before_the_option():
    import dataclasses

    from lglsearch.space import load_space

    space = load_space("tiny")
    # the key that the code before the option (commit 94f2e87^, which always distilled) gave this recipe
    assert TrainConfig(space="tiny", distill=True).key(space, "proxy") == "3ed98cc2e450"
    # one recipe, one key: built again (fields in another order) or its space named by path, the same
    base = TrainConfig(space="tiny")
    key = base.key(space, "proxy")
    assert TrainConfig(**dict(reversed(base.__dict__.items()))).key(space, "proxy") == key
    assert dataclasses.replace(base, space=str(space.source)).key(space, "proxy") == key
    # any other recipe, another key: every field that is not a name changed, and the resolved space and data
    changed = dict(resolution=32, epochs=4, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_epochs=0, n_random=2)
    changed |= dict(distill=True, seed=1, max_steps_per_epoch=5)
    assert set(changed) | {"space", "data"} == {f.name for f in dataclasses.fields(TrainConfig)}
    keys = {dataclasses.replace(base, **{k: v}).key(space, "proxy") for k, v in changed.items()}
    keys |= {key, base.key(space, "other data"), base.key(space.with_resolution(32), "proxy")}
    assert len(keys) == len(changed) + 3


def test_accuracy_is_deterministic_and_leaves_the_supernet_as_it_was(tmp_path):
    trained = train_supernet(QUICK, tmp_path, progress=False)
    net, space = trained.net, trained.net.space
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = space.largest()
    a = accuracy(net, arch, trained.data, calib_batches=2, batch_size=32, score_images=200)
    b = accuracy(net, arch, trained.data, calib_batches=2, batch_size=32, score_images=200)
    assert a == b and round(a * 200) == pytest.approx(a * 200)  # a share of exactly the 200 images asked for
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    loaded = load_supernet(tmp_path, space)
    assert accuracy(loaded, arch, trained.data, calib_batches=2, batch_size=32, score_images=200) == a


def test_proxy_score_is_top1_and_cross_entropy_of_the_recalibrated_arch(tmp_path):
    import torch.nn.functional as F

    from lglsearch.train.data import balanced_subset, labels_of
    from lglsearch.train.scoring import calibration_images, proxy_score

    trained = train_supernet(QUICK, tmp_path, progress=False)
    net, data, arch = trained.net, trained.data, trained.net.space.smallest()
    calib = calibration_images(data, calib_batches=2, batch_size=32)
    score = proxy_score(net, arch, data, calib=calib, score_images=300)
    assert score.top1 == accuracy(net, arch, data, calib=calib, score_images=300)
    # the reference: recalibrate the same way, then one cross-entropy over all 300 logits at once
    # (measure sums over batches of 256, so this also checks the batching), on the class-balanced 300
    picked = balanced_subset(data.val, 300).indices
    assert len(picked) == 300 and len(set(labels_of(data.val)[i] for i in picked)) == data.num_classes
    net.set_arch(arch).train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for images in calib:
            net(images)
        net.eval()
        images, labels = zip(*(data.val[i] for i in picked), strict=True)
        logits = net(torch.stack(images))
    labels = torch.tensor(labels)
    assert score.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert score.top1 == pytest.approx((logits.argmax(-1) == labels).float().mean().item())


def test_finetuned_score_trains_a_copy_of_the_arch_and_leaves_the_supernet_as_it_was(tmp_path):
    import torch.nn.functional as F

    from lglsearch.train.scoring import calibration_images, finetune, proxy_score

    trained = train_supernet(QUICK, tmp_path, progress=False)
    net, data, arch = trained.net, trained.data, trained.net.space.largest()
    calib = calibration_images(data, calib_batches=2, batch_size=32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain = proxy_score(net, arch, data, calib=calib, score_images=300)
    tuned = proxy_score(net, arch, data, calib=calib, score_images=300, finetune_steps=4)
    assert proxy_score(net, arch, data, calib=calib, score_images=300, finetune_steps=4) == tuned  # seeded
    assert tuned != plain
    other = proxy_score(net, arch, data, calib=calib, score_images=300, finetune_steps=4, seed=1)  # other batches
    both = proxy_score(net, arch, data, calib=calib, score_images=300, finetune_steps=4, finetune_repeats=2)
    assert both.top1 == pytest.approx((tuned.top1 + other.top1) / 2) and both.loss == pytest.approx(
        (tuned.loss + other.loss) / 2
    )
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the copy trained, not the shared weights
    # fine-tuning lowers the loss on the batches it trained on
    model = net.extract(arch)
    torch.manual_seed(0)  # the augmentations of finetune's first batch
    images, labels = next(iter(loader(data.train, 64, 0, shuffle=True)))
    with torch.no_grad():
        start = F.cross_entropy(model.train()(images), labels).item()
    tuned_model = finetune(model, data, 4, lr=1e-3, batch_size=64, seed=0)
    with torch.no_grad():
        assert F.cross_entropy(tuned_model.train()(images), labels).item() < start
    with pytest.raises(LglsearchError, match="finetune_steps must be >= 0 and finetune_repeats >= 1"):
        proxy_score(net, arch, data, calib=calib, finetune_steps=-1)
    with pytest.raises(LglsearchError, match="got 2 and 0"):
        proxy_score(net, arch, data, calib=calib, finetune_steps=2, finetune_repeats=0)


def test_proxy_scores_equal_proxy_score_on_each_set_with_one_fine_tuning(tmp_path):
    import dataclasses

    from torch.utils.data import Subset

    from lglsearch.train.scoring import calibration_images, proxy_score, proxy_scores

    trained = train_supernet(QUICK, tmp_path, progress=False)
    net, data, arch = trained.net, trained.data, trained.net.space.largest()
    calib = calibration_images(data, calib_batches=2, batch_size=32)
    sets = {"first": Subset(data.val, range(200)), "second": Subset(data.val, range(200, 500))}
    for steps, repeats in ((0, 1), (3, 2)):
        scores = proxy_scores(net, arch, data, sets, calib=calib, finetune_steps=steps, finetune_repeats=repeats)
        for name, subset in sets.items():
            alone = proxy_score(
                net,
                arch,
                dataclasses.replace(data, val=subset),
                calib=calib,
                finetune_steps=steps,
                finetune_repeats=repeats,
            )
            assert scores[name] == alone, (steps, name)
        assert scores["first"] != scores["second"]  # each set measured on its own images


def test_bad_checkpoints_and_spaces(tmp_path):
    train_supernet(QUICK, tmp_path, progress=False)
    from lglsearch.space import load_space

    with pytest.raises(LglsearchError, match="was trained for space 'tiny' @64, not 'edgevit' @64"):
        load_supernet(tmp_path, load_space().with_resolution(64, 10))
    with pytest.raises(LglsearchError, match="was trained for another space"):
        train_supernet(TrainConfig(**{**QUICK.__dict__, "space": None}), tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(LglsearchError, match="is corrupt"):
        load_supernet(tmp_path)
    with pytest.raises(LglsearchError, match="no supernet checkpoint"):
        load_supernet(tmp_path / "nowhere")


class _RunsCode:
    """An object whose unpickling runs code: what a hostile checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    train_supernet(QUICK, tmp_path / "sn", progress=False)
    path = tmp_path / "sn" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "ran"
    torch.save({**state, "payload": _RunsCode(marker)}, path)
    for load in (
        lambda: load_supernet(tmp_path / "sn"),
        lambda: train_supernet(QUICK, tmp_path / "sn", progress=False),
    ):
        with pytest.raises(LglsearchError, match=r"refused to load .*objects other than tensors and plain data"):
            load()
    assert not marker.exists()


def test_resuming_with_another_recipe_is_refused_before_its_description_changes(tmp_path):
    out = tmp_path / "sn"
    train_supernet(TrainConfig(**{**QUICK.__dict__, "epochs": 1}), out, progress=False)
    described = (out / "config.json").read_text()
    weights = (out / "checkpoint.pt").read_bytes()
    for change, what in (({"seed": 1}, "seed: 0 then, 1 now"), ({"lr": 1e-3}, "lr: 0.002 then, 0.001 now")):
        with pytest.raises(LglsearchError, match=f"trained with another recipe \\({what}\\)"):
            train_supernet(TrainConfig(**{**QUICK.__dict__, "epochs": 1, **change}), out, progress=False)
    assert (out / "config.json").read_text() == described and (out / "checkpoint.pt").read_bytes() == weights
    from lglsearch.space import SPACES_DIR

    # the same space named by its path is the same recipe: the finished checkpoint is reused as it is
    by_path = TrainConfig(**{**QUICK.__dict__, "epochs": 1, "space": str(SPACES_DIR / "tiny.yaml")})
    assert train_supernet(by_path, out, progress=False).epochs_done == 1
    assert (out / "checkpoint.pt").read_bytes() == weights


def test_unreadable_and_mismatched_checkpoints_say_what_failed(tmp_path):
    train_supernet(QUICK, tmp_path / "sn", progress=False)
    path = tmp_path / "sn" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    net = dict(state["net"])
    net.pop(next(iter(net)))
    torch.save({**state, "net": net}, path)
    with pytest.raises(LglsearchError, match="does not fit the space 'tiny': 1 missing key") as err:
        load_supernet(tmp_path / "sn")
    assert "\n" not in str(err.value)
    path.unlink()
    path.mkdir()  # a path that exists but cannot be read as a file: an I/O error, not a corrupt file
    with pytest.raises(LglsearchError, match="could not read supernet checkpoint") as err:
        trainer._load_checkpoint(path)
    assert "delete" not in str(err.value)


def test_cli_train_and_eval(tmp_path, capsys):
    from lglsearch.cli import main

    out = tmp_path / "sn"
    assert main(["supernet", "train", "--space", "tiny", "--smoke-test", "--out", str(out)]) == 0
    assert "1 epoch(s)" in capsys.readouterr().out
    assert main(["supernet", "eval", "--supernet", str(out), "--arch", "edgevit_xxs", "--json"]) == 2
    assert "outside the space" in capsys.readouterr().err
    from lglsearch.space import load_space

    arch = load_space("tiny").smallest()
    assert main(["supernet", "eval", "--supernet", str(out), "--arch", arch.to_json(), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    argv = ["supernet", "eval", "--supernet", str(out), "--arch", arch.to_json(), "--finetune-steps", "2", "--json"]
    assert main(argv) == 0
    tuned = json.loads(capsys.readouterr().out)
    from lglsearch.search.execution import SCORE_IMAGES
    from lglsearch.train.data import load_data
    from lglsearch.train.scoring import proxy_score

    # a share of the search's scoring images (the tuned score is recomputed below, on the same ones)
    assert shown["score_images"] == SCORE_IMAGES < len(load_data(None, 64).val)
    n = SCORE_IMAGES
    assert round(shown["accuracy"] * n) == pytest.approx(shown["accuracy"] * n) and shown["loss"] > 0
    expected = proxy_score(load_supernet(out), arch, load_data(None, 64), finetune_steps=2, score_images=n)
    assert tuned["finetune_steps"] == 2 and (tuned["accuracy"], tuned["loss"]) == (expected.top1, expected.loss)


def test_standalone_training_learns_and_matches_the_recipe():
    import dataclasses

    from torch.utils.data import Subset

    from lglsearch.space import load_space
    from lglsearch.train.data import load_data
    from lglsearch.train.scoring import top1
    from lglsearch.train.standalone import train_standalone

    data = load_data(None, 64)
    data = dataclasses.replace(data, val=Subset(data.val, range(0, 2000, 4)))  # 500, balanced
    arch = load_space("tiny").smallest()
    config = TrainConfig(space="tiny", epochs=1, batch_size=32, max_steps_per_epoch=20, warmup_epochs=0)
    untrained = top1(
        train_standalone(arch, data, TrainConfig(**{**config.__dict__, "lr": 1e-12}), progress=False), data.val
    )
    trained = top1(train_standalone(arch, data, config, progress=False), data.val)
    assert trained > untrained + 0.1  # 20 steps of real learning on the 10-class proxy
    assert top1(train_standalone(arch, data, config, progress=False), data.val) == trained  # seeded

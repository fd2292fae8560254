"""`lglsearch train`, timm for any arch, and the whole path from a search to a phone (tiny space)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import timm
import torch

import lglsearch.train.trainer as trainer
from lglsearch.cli import main
from lglsearch.errors import LglsearchError
from lglsearch.export import read_checkpoint
from lglsearch.nn import build_model
from lglsearch.space import Arch, load_space
from lglsearch.train.data import load_data
from lglsearch.train.recipe import Recipe, TrainConfig
from lglsearch.train.scoring import measure
from lglsearch.train.supernet import train_supernet
from lglsearch.train.trainer import train_arch
from tests.conftest import write_idx_subset

DEVICE = "snapdragon888"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> str:
    return str(write_idx_subset(tmp_path_factory.mktemp("data"), 16, 10))  # 160 train, 100 val images


@pytest.fixture(scope="module")
def arch() -> Arch:
    return load_space("tiny").smallest()  # at its own 64 px, 10 classes: the quickest to train


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))


QUICK = Recipe(epochs=2, batch_size=16, max_steps_per_epoch=3, warmup_epochs=1)


def test_outputs_are_what_export_timm_and_the_metrics_say(tmp_path, small_data, arch):
    data = load_data(small_data, 64)
    out = tmp_path / "run"
    trained = train_arch(arch, data, QUICK, out, accelerator="cpu", progress=False)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and (metrics["images_per_s"] > 0).all()
    assert Arch.from_json((out / "arch.json").read_text()) == arch
    # the metrics are the returned model's own top-1 on the validation images
    assert metrics["val_top1"].iloc[-1] == measure(trained.model, data.val).top1
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # plain data only
    assert state["epoch"] == 2 and set(state["state_dict"]) == set(build_model(arch).state_dict())
    # timm reads the checkpoint and the training's normalisation; the weights are the trained ones
    model = timm.create_model("edgevit", arch=str(out), checkpoint_path=str(out / "checkpoint.pt")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), trained.model(x))
    assert model.pretrained_cfg["mean"] == data.mean and model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 2  # what `export --checkpoint` reads


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, small_data, arch, monkeypatch):
    data = load_data(small_data, 64)
    whole = train_arch(arch, data, QUICK, tmp_path / "whole", accelerator="cpu", progress=False)
    saves = []
    real_save = trainer.atomic_save_torch

    def save_then_die(value, path):
        real_save(value, path)
        saves.append(path)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(trainer, "atomic_save_torch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_arch(arch, data, QUICK, tmp_path / "cut", accelerator="cpu", progress=False)
    monkeypatch.setattr(trainer, "atomic_save_torch", real_save)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train_arch(arch, data, QUICK, tmp_path / "cut", resume=True, accelerator="cpu", progress=False)
    for (key, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert pd.read_csv(tmp_path / "cut" / "metrics.csv")["epoch"].tolist() == [1, 2]


def test_ema_weights_are_the_result_and_what_timm_loads(tmp_path, small_data, arch):
    data = load_data(small_data, 64)
    recipe = Recipe(**{**QUICK.__dict__, "ema_decay": 0.9})
    trained = train_arch(arch, data, recipe, tmp_path / "ema", accelerator="cpu", progress=False)
    state = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)
    ema, raw = state["state_dict_ema"], state["state_dict"]
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)  # an average, not the last weights
    assert all(torch.equal(v, ema[k]) for k, v in trained.model.state_dict().items())
    model = timm.create_model("edgevit", arch=arch, checkpoint_path=str(tmp_path / "ema" / "checkpoint.pt"))
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    assert json.loads((tmp_path / "ema" / "train.json").read_text())["weights"] == "EMA"


def test_init_from_the_supernet_starts_from_the_inherited_weights(tmp_path, small_data, arch):
    config = TrainConfig(space="tiny", data=small_data, epochs=1, batch_size=16, max_steps_per_epoch=2)
    supernet = train_supernet(config, tmp_path / "supernet", progress=False)
    model = build_model(arch)
    assert trainer.initial_weights(model, f"supernet:{supernet.directory}") == f"supernet:{supernet.directory}"
    inherited = supernet.net.extract(arch).state_dict()
    assert all(torch.equal(v, inherited[k]) for k, v in model.state_dict().items())
    # another class count: everything but the freshly initialised head
    other = build_model(arch.replace(num_classes=3))
    assert "10-class head left out" in trainer.initial_weights(other, f"supernet:{supernet.directory}")
    assert torch.equal(other.stages[0].downsample.proj.weight, inherited["stages.0.downsample.proj.weight"])


def test_timm_builds_any_arch_with_its_usual_surface(tmp_path, arch):
    family = tmp_path / "runs" / "r" / "family"
    family.mkdir(parents=True)
    (family / f"{arch.id}.json").write_text(arch.to_json())
    for given in (arch, arch.to_dict(), str(family / f"{arch.id}.json")):
        model = timm.create_model("edgevit", arch=given, num_classes=7)
        assert model.arch == arch.replace(num_classes=7) and model.pretrained_cfg["num_classes"] == 7
        assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)  # no training recorded: ImageNet's
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, arch.stages[-1].width, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)  # an identity head: features out
    with pytest.raises(Exception, match="edgevit needs an arch"):
        timm.create_model("edgevit")


def test_an_arch_id_names_a_family_member_under_runs(tmp_path, monkeypatch, arch):
    from lglsearch.space import parse_arch

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LglsearchError, match=f"no run under .* has arch {arch.id}"):
        parse_arch(arch.id)
    (tmp_path / "runs" / "r" / "family").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "family" / f"{arch.id}.json").write_text(arch.to_json())
    assert parse_arch(arch.id) == arch


def test_from_a_search_to_a_phone(tmp_path, small_data, capsys, monkeypatch):
    """The README's path on the tiny space: search, pick, train, export, predict."""
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(space="tiny", data=small_data, epochs=1, batch_size=16, max_steps_per_epoch=2)
    supernet = train_supernet(config, tmp_path / "supernet", progress=False).directory
    argv = ["search", "--device", DEVICE, "--budget-ms", "1000", "--space", "tiny", "--trials", "3"]
    assert main([*argv, "--population", "4", "--workers", "1", "--supernet", str(supernet), "--data", small_data]) == 0
    front = pd.read_csv(tmp_path / "runs" / f"{DEVICE}-1000ms" / "pareto.csv")
    pick = front["arch_id"].iloc[0]
    capsys.readouterr()
    argv = ["train", "--arch", pick, "--data", small_data, "--epochs", "2", "--batch-size", "16", "--smoke-test"]
    assert main([*argv, "--init", f"supernet:{supernet}"]) == 0
    summary = capsys.readouterr().out
    out = tmp_path / "runs" / f"train-{pick}"
    top1 = pd.read_csv(out / "metrics.csv")["val_top1"].iloc[-1]
    assert f"trained {pick} (2 epoch(s)): top-1 {100 * top1:.2f}%" in summary and f"on {DEVICE}" in summary
    assert (
        main(
            ["export", "--arch", str(out / "arch.json"), "--checkpoint", str(out / "checkpoint.pt"), "--onnx", "m.onnx"]
        )
        == 0
    )
    assert "onnxruntime vs torch" in capsys.readouterr().out
    assert main(["predict", "--arch", pick, "--device", DEVICE, "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert f"{predicted['latency_ms']:.2f} ms" in summary
    # a second training into the same directory is refused; a resume of the finished one reports it again
    assert main(argv) == 2
    assert "already holds a training (epoch 2 of 2); pass --resume" in capsys.readouterr().err
    assert main([*argv, "--init", f"supernet:{supernet}", "--resume"]) == 0
    assert f"top-1 {100 * top1:.2f}%" in capsys.readouterr().out


def test_resume_with_changed_arguments_is_refused(tmp_path, small_data, arch, capsys):
    (tmp_path / "a.json").write_text(arch.to_json())
    argv = ["train", "--arch", str(tmp_path / "a.json"), "--data", small_data, "--smoke-test", "--batch-size", "16"]
    argv += ["--out", str(tmp_path / "t"), "--device", "", "--epochs", "2"]
    assert main(argv) == 0
    before = (tmp_path / "t" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    for extra, message in [
        (["--epochs", "3"], "--resume with changed arguments: recipe.epochs was 2, now 3"),
        (["--init", "checkpoint:nowhere.pt"], "--resume with changed arguments: init was None"),
    ]:
        assert main([*argv, *extra, "--resume"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert (tmp_path / "t" / "checkpoint.pt").read_bytes() == before  # the finished work is untouched


def test_bad_input_is_one_line(tmp_path, small_data, arch, capsys):
    (tmp_path / "a.json").write_text(arch.to_json())
    other = load_space("tiny").largest()
    torch.save(build_model(other).state_dict(), tmp_path / "other.pt")
    (tmp_path / "empty").mkdir()
    for split in ("train", "val"):
        (tmp_path / "imageless" / split / "cat").mkdir(parents=True)
    base = ["train", "--arch", str(tmp_path / "a.json"), "--smoke-test", "--out", str(tmp_path / "o"), "--device", ""]
    cases = [
        (
            [*base, "--data", small_data, "--init", f"checkpoint:{tmp_path / 'other.pt'}"],
            "does not fit the arch: stages.",
        ),
        ([*base, "--data", str(tmp_path / "empty")], "needs `train/` and `val/`"),
        ([*base, "--data", str(tmp_path / "imageless")], "holds no images"),
        ([*base, "--data", small_data, "--resolution", "80"], "cannot be trained at --resolution 80"),
        ([*base, "--data", small_data, "--resume"], "--resume: no checkpoint at"),
        ([*base, "--data", small_data, "--init", "weights.pt"], "give supernet:DIR or checkpoint:FILE"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_a_batch_larger_than_the_data_says_so(tmp_path, small_data, arch):
    data = load_data(small_data, 64)
    with pytest.raises(Exception, match="fewer than one batch of 512; lower --batch-size"):
        train_arch(arch, data, Recipe(batch_size=512), tmp_path / "o", accelerator="cpu", progress=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, r"epochs must be >= 1, got 0; pass --epochs 1 or more"),
        ("batch_size", 0, r"batch size must be >= 1, got 0; pass --batch-size"),
        ("lr", 0.0, r"the learning rate must be a number > 0, got 0.0; pass e.g. --lr 2e-3"),
        ("lr", float("nan"), r"the learning rate must be a number > 0, got nan"),
        ("weight_decay", -0.1, r"weight decay must be >= 0, got -0.1"),
        ("warmup_epochs", -1, r"warm-up epochs must be >= 0"),
        ("max_steps_per_epoch", 0, r"max_steps_per_epoch must be >= 1 or None"),
    ],
)
def test_both_recipes_refuse_what_cannot_train_in_one_line(field, value, message):
    for recipe in (Recipe, TrainConfig):
        with pytest.raises(LglsearchError, match=message) as caught:
            recipe(**{field: value})
        assert "\n" not in str(caught.value)
    with pytest.raises(LglsearchError, match="label smoothing must be in"):
        Recipe(label_smoothing=1.0)


def test_an_arch_trains_under_torchrun(tmp_path, small_data, arch):
    import os
    import subprocess
    import sys

    from tests.test_distributed import _free_port

    (tmp_path / "a.json").write_text(arch.to_json())
    env = os.environ | {"LGLSEARCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    command += ["-m", "lglsearch.cli", "train", "--arch", str(tmp_path / "a.json"), "--data", small_data]
    command += [
        "--smoke-test",
        "--batch-size",
        "16",
        "--accelerator",
        "cpu",
        "--device",
        "",
        "--out",
        str(tmp_path / "t"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained ") == 1, "one process reports"
    state = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)
    assert state["identity"]["world"] == 2 and state["epoch"] == 1
    # two steps of a global batch of 32 moved the weights from their seeded initialisation
    from lglsearch._rng import seeded

    with seeded(0):
        init = build_model(arch).state_dict()
    assert any(not torch.equal(v, state["state_dict"][k]) for k, v in init.items() if v.is_floating_point())

"""EdgeViT built from an `Arch`, the reference-checkpoint converter and timm registration.

Pan et al., "EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers",
ECCV 2022 (arXiv 2205.03436); reference code github.com/saic-fi/edgevit (src/edgevit.py). For the
presets `edgevit_xxs`, `edgevit_xs`, `edgevit_s` the model here is the reference model: the same
parameters, and after `checkpoint_filter_fn` the same function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models import register_model
from torch import nn

from lglsearch.errors import LglsearchError
from lglsearch.nn.blocks import LGLBlock, PatchEmbed
from lglsearch.space import PRESETS, Arch, parse_arch

__all__ = [
    "TRAINING_SUMMARY",
    "EdgeViT",
    "build_model",
    "check_shapes",
    "check_state_dict",
    "checkpoint_filter_fn",
    "load_checkpoint",
]


class EdgeViTStage(nn.Module):
    """Patch embedding (the downsampling) then the stage's blocks."""

    def __init__(self, arch: Arch, index: int, in_chans: int, drop_path: list[float]) -> None:
        super().__init__()
        stage = arch.stages[index]
        self.downsample = PatchEmbed(in_chans, stage.width, arch.patch(index))
        self.blocks = nn.Sequential(
            *(
                LGLBlock(
                    kind,
                    stage.width,
                    stage.heads,
                    stage.mlp_ratio,
                    stage.sr,
                    arch.sampler,
                    arch.propagation,
                    drop_path[j],
                )
                for j, kind in enumerate(stage.kinds)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class EdgeViT(nn.Module):
    """The network an `Arch` denotes (timm surface: forward_features / forward_head)."""

    def __init__(self, arch: Arch, *, in_chans: int = 3, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = arch.num_classes
        self.num_features = arch.stages[-1].width
        rates = torch.linspace(0, drop_path_rate, sum(arch.depths)).tolist()
        stages, chans, start = [], in_chans, 0
        for i, stage in enumerate(arch.stages):
            stages.append(EdgeViTStage(arch, i, chans, rates[start : start + stage.depth]))
            chans, start = stage.width, start + stage.depth
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head = nn.Linear(self.num_features, arch.num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised head; 0 classes gives an identity head (features out), as in timm."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if global_pool not in (None, "avg"):
            raise ValueError(f"EdgeViT pools by average only; got global_pool={global_pool!r}")
        self.num_classes = num_classes
        if num_classes:  # an arch always has a head; a feature extractor keeps the arch it was built from
            self.arch = self.arch.replace(num_classes=num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self.head)


def _init_weights(module: nn.Module) -> None:
    # as the reference: Linear truncated normal (std 0.02) with zero bias, LayerNorm (1, 0);
    # convolutions keep PyTorch's default init
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_model(arch: Arch, *, in_chans: int = 3, drop_path_rate: float = 0.0) -> EdgeViT:
    """The PyTorch model of any `Arch`."""
    return EdgeViT(arch, in_chans=in_chans, drop_path_rate=drop_path_rate)


# --------------------------------------------------------------------------------------------
# Reference checkpoints

# reference name -> ours, applied in order to each key (saic-fi/edgevit, src/edgevit.py)
_RENAMES = (
    (r"^patch_embed(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample."),
    (r"^blocks(\d+)\.(\d+)\.LocalAgg\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.local_agg."),
    (r"^blocks(\d+)\.(\d+)\.SelfAttn\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.self_attn."),
    (r"\.local_agg\.conv1\.", ".local_agg.pw1."),
    (r"\.local_agg\.attn\.", ".local_agg.dw."),
    (r"\.local_agg\.conv2\.", ".local_agg.pw2."),
    (r"\.attn\.LocalProp\.", ".attn.local_prop."),
)


def _unwrap(state_dict: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """The state dict inside a training checkpoint's wrapper (timm's order: EMA weights first), or itself."""
    for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            return state_dict[wrapper]
    return state_dict


def check_state_dict(state_dict: Any, source: str = "checkpoint") -> None:
    """Refuse, in one line naming the first bad entry, a state dict that is not text keys to tensors
    (a file may come from anyone: its contents are checked before anything reads them)."""
    if not isinstance(state_dict, Mapping):
        raise LglsearchError(
            f"{source} holds a {type(state_dict).__name__}, not a state dict; give a state dict saved with torch.save"
        )
    inner = _unwrap(state_dict)
    for key, value in inner.items():
        if not isinstance(key, str):
            raise LglsearchError(
                f"{source} is not a state dict: key {key!r} is a {type(key).__name__}, not text; "
                "give a state dict saved with torch.save(model.state_dict())"
            )
        if not isinstance(value, torch.Tensor):
            raise LglsearchError(
                f"{source} is not a state dict: {key} holds a {type(value).__name__}, not a tensor; "
                "give a state dict saved with torch.save(model.state_dict())"
            )


def check_shapes(model: nn.Module, state_dict: Mapping[str, Any], source: str, fix: str, what: str = "arch") -> None:
    """Refuse, in one line naming the first mismatching key, a state dict (already in this project's
    names) whose keys or tensor shapes differ from `model`'s, before `load_state_dict` sees it."""
    check_state_dict(state_dict, source)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        key, got, want = wrong[0]
        raise LglsearchError(
            f"{source} does not fit the {what}: {key} has shape {got}, the model expects {want} "
            f"({len(wrong)} tensor(s) differ); {fix}"
        )
    if missing or unexpected:
        raise LglsearchError(
            f"{source} does not fit the {what}: {len(missing)} missing key(s) (first: "
            f"{missing[:1]}), {len(unexpected)} unexpected (first: {unexpected[:1]}); {fix}"
        )


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """A state dict of this project's model from one of ours or of the reference implementation."""
    state_dict = _unwrap(state_dict)
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if any(k.startswith("stages.") for k in state_dict):
        return dict(state_dict)  # already native
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_checkpoint(model: EdgeViT, state_dict: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Load ours or a reference state dict strictly; a state dict that is not text keys to tensors, or
    does not fit the model, is one line naming the first bad key."""
    check_state_dict(state_dict, source)  # before any key is read as text
    converted = checkpoint_filter_fn(state_dict, model)
    check_shapes(model, converted, source, f"pass the arch it was trained with (this model is arch {model.arch.id})")
    model.load_state_dict(converted, strict=True)


# --------------------------------------------------------------------------------------------
# timm registration


TRAINING_SUMMARY = "train.json"  # what `lglsearch train` writes beside arch.json: the data's mean and std


def _resolve_arch(arch: Arch | Mapping[str, Any] | str | Path | None) -> tuple[Arch, dict[str, Any]]:
    """The arch `timm.create_model("edgevit", arch=...)` names, and what its training recorded
    (the normalisation of its data) where it came from a `lglsearch train` directory."""
    if arch is None:
        raise LglsearchError(
            'edgevit needs an arch: timm.create_model("edgevit", arch=...) with a preset name, a JSON file '
            "(runs/<run>/family/<id>.json), a training directory, a dict or an Arch"
        )
    if isinstance(arch, Arch):
        return arch, {}
    if isinstance(arch, Mapping):
        return Arch.from_dict(arch), {}
    path = Path(arch)
    if path.is_dir():
        path = path / "arch.json"
    trained: dict[str, Any] = {}
    summary = path.parent / TRAINING_SUMMARY
    if path.is_file() and summary.is_file():
        try:
            recorded = json.loads(summary.read_text())
            trained = {k: tuple(recorded[k]) for k in ("mean", "std")}
        except (OSError, ValueError, KeyError, TypeError):
            trained = {}  # no usable record: timm's defaults
    return parse_arch(path if path.is_file() else arch), trained


def _create_edgevit(variant: str, pretrained: bool = False, arch: Any = None, **kwargs: Any) -> EdgeViT:
    if pretrained:
        raise LglsearchError(
            f"no pretrained weights ship with lglsearch for {variant}; create it with "
            "pretrained=False and load a checkpoint (lglsearch export --checkpoint FILE reads "
            "reference weights too; timm's checkpoint_path= reads a `lglsearch train` checkpoint)"
        )
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    arch, trained = (PRESETS[variant], {}) if variant in PRESETS else _resolve_arch(arch)
    changes = {}
    if kwargs.get("num_classes") is not None:
        changes["num_classes"] = kwargs.pop("num_classes")
    if kwargs.get("img_size") is not None:
        changes["resolution"] = kwargs.pop("img_size")
    kwargs.pop("num_classes", None)
    kwargs.pop("img_size", None)
    unknown = set(kwargs) - {"in_chans", "drop_path_rate"}
    if unknown:
        raise LglsearchError(
            f"{variant}: unsupported argument(s) {sorted(unknown)}; EdgeViT takes num_classes, "
            "img_size, in_chans and drop_path_rate" + ("" if variant in PRESETS else " beside arch")
        )
    model = build_model(arch.replace(**changes), **kwargs)
    model.default_cfg = model.pretrained_cfg = {
        "architecture": variant,
        "arch_id": model.arch.id,
        "num_classes": model.num_classes,
        "input_size": (kwargs.get("in_chans", 3), model.arch.resolution, model.arch.resolution),
        "mean": trained.get("mean", (0.485, 0.456, 0.406)),  # the data it was trained on, else ImageNet's
        "std": trained.get("std", (0.229, 0.224, 0.225)),
        "first_conv": "stages.0.downsample.proj",
        "classifier": "head",
        "paper_ids": "arXiv:2205.03436",
    }
    return model


@register_model
def edgevit(pretrained: bool = False, arch: Any = None, **kwargs: Any) -> EdgeViT:
    """Any arch of the LGL space: `arch=` a preset name, a JSON file (a family member of a run, or a
    training's arch.json), a training directory, an arch id under ./runs, inline JSON, a dict or an Arch."""
    return _create_edgevit("edgevit", pretrained, arch, **kwargs)


@register_model
def edgevit_xxs(pretrained: bool = False, **kwargs: Any) -> EdgeViT:
    """EdgeViT-XXS: depths 1-1-3-2, widths 36-72-144-288, 4.1M params."""
    return _create_edgevit("edgevit_xxs", pretrained, **kwargs)


@register_model
def edgevit_xs(pretrained: bool = False, **kwargs: Any) -> EdgeViT:
    """EdgeViT-XS: depths 1-1-3-1, widths 48-96-240-384, 6.8M params."""
    return _create_edgevit("edgevit_xs", pretrained, **kwargs)


@register_model
def edgevit_s(pretrained: bool = False, **kwargs: Any) -> EdgeViT:
    """EdgeViT-S: depths 1-2-5-3, widths 48-96-240-384, 13.1M params (the reference code's size)."""
    return _create_edgevit("edgevit_s", pretrained, **kwargs)

"""An independent, test-only EdgeViT written from the reference's description.

It follows ../shared/data/edgevit-reference/README.md literally and uses the reference's module
names (patch_embedN, blocksN.j.LocalAgg / SelfAttn, LocalProp), so its state dict has the
reference layout (a test checks that against the published key listings). The point is a second
implementation computed differently (explicit softmax, AvgPool2d(1, sr) sampling, LayerNorm on
flattened tokens) against which lglsearch's converter and model are checked.
"""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, conv: bool) -> None:
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.fc1, self.act, self.fc2 = layer(dim, hidden), nn.GELU(), layer(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LocalAgg(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * ratio), conv=True)

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class GlobalSparseAttn(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.heads, self.sr, self.scale = heads, sr, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sampler = nn.AvgPool2d(1, sr)
            self.LocalProp = nn.ConvTranspose2d(dim, dim, sr, stride=sr, groups=dim)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        b, _n, c = x.shape
        if self.sr > 1:
            x = self.sampler(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        qkv = self.qkv(x).reshape(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, -1, c)
        if self.sr > 1:
            x = x.permute(0, 2, 1).reshape(b, c, h // self.sr, w // self.sr)
            x = self.norm(self.LocalProp(x).reshape(b, c, -1).permute(0, 2, 1))
        return self.proj(x)


class SelfAttn(nn.Module):
    def __init__(self, dim: int, heads: int, ratio: float, sr: int) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalSparseAttn(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * ratio), conv=False)

    def forward(self, x):
        x = x + self.pos_embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm1(t), h, w)
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class LGLBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ratio: float, sr: int) -> None:
        super().__init__()
        self.LocalAgg = LocalAgg(dim, ratio) if sr > 1 else nn.Identity()
        self.SelfAttn = SelfAttn(dim, heads, ratio, sr)

    def forward(self, x):
        return self.SelfAttn(self.LocalAgg(x))


class PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Conv2d(cin, dim, patch, stride=patch)

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


class ReferenceEdgeViT(nn.Module):
    def __init__(self, depths, widths, head_dim, srs=(4, 2, 2, 1), ratio=4.0, classes=1000):
        super().__init__()
        cin = 3
        for i, (d, w, sr) in enumerate(zip(depths, widths, srs, strict=True), start=1):
            setattr(self, f"patch_embed{i}", PatchEmbed(cin, w, 4 if i == 1 else 2))
            setattr(self, f"blocks{i}", nn.ModuleList(LGLBlock(w, w // head_dim, ratio, sr) for _ in range(d)))
            cin = w
        self.num_stages = len(depths)
        self.norm = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"blocks{i}"):
                x = block(x)
        return self.head(self.norm(x).flatten(2).mean(-1))


REFERENCE_CONFIGS = {
    "edgevit_xxs": dict(depths=(1, 1, 3, 2), widths=(36, 72, 144, 288), head_dim=36),
    "edgevit_xs": dict(depths=(1, 1, 3, 1), widths=(48, 96, 240, 384), head_dim=48),
    "edgevit_s": dict(depths=(1, 2, 5, 3), widths=(48, 96, 240, 384), head_dim=48),
}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every tensor, BatchNorm statistics included, so eval mode is non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
    return model

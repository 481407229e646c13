"""Vision transformers: torchvision's ViT-B/16, ViT-B/32 and Swin-T (fresh weights), and a tiny ViT
for the 8×8 digits whose attention is built from nn.Linear layers.

What the library prunes is the weights of conv and linear layers (`spec.prunable_weights`), so in
every model here the attention output projection and both MLP layers of every block are
candidates, and the patch embedding (the first candidate) and the class head (the last) stay
dense by default, as any stem and classifier.  The class token, the position embeddings and
Swin's relative-position bias tables are parameters of no layer and are never pruned.  The tiny
ViT's fused q/k/v projection is an nn.Linear, so every solver and the layer-wise path cover all
of its attention; torchvision's ViT keeps q/k/v in nn.MultiheadAttention's `in_proj_weight` (a bare
parameter, not a layer), which stays dense; Swin-T's `qkv` is an nn.Linear and is pruned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TinyViT", "torchvision_vit", "torchvision_swin"]


class Attention(nn.Module):
    """Multi-head self-attention from two nn.Linear layers (fused q/k/v, output projection), so
    that the solvers and the layer-wise reconstruction see every attention weight as a layer."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the embedding dimension {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with a GELU."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """A ViT for small images: overlapping patch embedding (a (patch+2)² conv with stride `patch`,
    which on the 8×8 digits lifts 20 epochs from about 85% to 97% over plain patches), class token,
    learned position embeddings, `depth` pre-norm blocks, LayerNorm and a linear head on the class
    token."""

    def __init__(self, num_classes: int = 10, image_size: int = 8, in_channels: int = 1, patch: int = 2,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp: int = 128):
        super().__init__()
        _check_patch(image_size, patch, "vit_tiny")
        self.patch_embed = nn.Conv2d(in_channels, dim, patch + 2, patch, padding=1)  # overlapping patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def _check_patch(image_size: int, patch: int, name: str) -> None:
    if image_size % patch:
        raise ValueError(f"{name} needs an image size divisible by its patch size {patch}, got {image_size}")


def torchvision_vit(arch: str, patch: int) -> Callable[..., nn.Module]:
    """A builder of torchvision's `arch` (weights=None) at `image_size`, with `in_channels` inputs."""
    def build(num_classes: int = 10, image_size: int = 224, in_channels: int = 3) -> nn.Module:
        import torchvision

        _check_patch(image_size, patch, arch)
        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, image_size=image_size)
        if in_channels != 3:
            model.conv_proj = nn.Conv2d(in_channels, model.hidden_dim, patch, patch)
        return model

    return build


def torchvision_swin(arch: str) -> Callable[..., nn.Module]:
    """A builder of torchvision's `arch` (weights=None); Swin pads any input size itself, so
    `image_size` only needs to hold one 4×4 patch."""
    def build(num_classes: int = 10, image_size: int = 224, in_channels: int = 3) -> nn.Module:
        import torchvision

        if image_size < 4:
            raise ValueError(f"{arch} needs images of at least 4 px (one 4×4 patch), got {image_size}")
        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            stem = model.features[0][0]
            model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride)
        return model

    return build

"""Ultra-Fast-Lane-Detection (Qin, Wang, Li, ECCV 2020): row-anchor lane classification.

A torchvision ResNet backbone; a 1×1 conv squeezes the last feature map to 8 channels, which are
flattened into two linear layers that score, for every row anchor and lane slot, which of
`griding_num` column cells holds the lane (or the extra "no lane" cell).  In training an
auxiliary segmentation branch on the layer2/3/4 features predicts lane masks at 1/8 of the input.
Module names follow the reference code (model, cls, pool, aux_header2/3/4, aux_combine) so that
its state dicts map onto this model; weights are never downloaded.

The losses: focal classification (γ = 2), the similarity loss between adjacent row anchors, the
shape loss on the second difference of the expected location, and cross-entropy on the
auxiliary masks, weighted as in the TuSimple configuration (1, 1, 0, 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UFLD", "LossWeights", "focal_loss", "similarity_loss", "shape_loss", "ufld_loss", "BACKBONES"]

BACKBONES = {"18": "resnet18", "34": "resnet34"}
STRIDE = 32  # the backbone's output stride; input sizes must be multiples of it


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, padding: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv → BN → ReLU, with the reference's sub-module names (conv, bn, relu)."""
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False))
    block.add_module("bn", nn.BatchNorm2d(cout))
    block.add_module("relu", nn.ReLU(inplace=True))
    return block


class _Backbone(nn.Module):
    """A torchvision ResNet without its classifier, returning the layer2, layer3, layer4 features."""

    def __init__(self, depth: str):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, BACKBONES[depth])(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x2 = self.layer2(self.layer1(x))
        x3 = self.layer3(x2)
        return x2, x3, self.layer4(x3)


class UFLD(nn.Module):
    """UFLD with a ResNet-18/34 backbone; output (N, griding_num + 1, num_row_anchors, num_lanes).

    In training mode with `use_aux` the forward returns (cls, seg), seg of shape
    (N, num_lanes + 1, h/8, w/8); otherwise the cls logits alone.  `hidden` is the width of the
    first linear layer (2048 in the reference); `input_size` is (h, w), multiples of 32.
    """

    def __init__(self, backbone: str = "18", griding_num: int = 100, num_row_anchors: int = 56,
                 num_lanes: int = 4, input_size: tuple[int, int] = (288, 800), use_aux: bool = True,
                 hidden: int = 2048, pool_channels: int = 8):
        super().__init__()
        backbone = str(backbone).removeprefix("resnet")
        if backbone not in BACKBONES:
            raise ValueError(f"UFLD backbone {backbone!r} is not supported; choose one of {', '.join(BACKBONES)}")
        h, w = (int(s) for s in input_size)
        if h < STRIDE or w < STRIDE or h % STRIDE or w % STRIDE:
            raise ValueError(f"UFLD input_size {tuple(input_size)} must be (h, w) with both multiples of "
                             f"{STRIDE} (the backbone's stride), e.g. (288, 800)")
        for name, value, low in (("griding_num", griding_num, 2), ("num_row_anchors", num_row_anchors, 2),
                                 ("num_lanes", num_lanes, 1), ("hidden", hidden, 1),
                                 ("pool_channels", pool_channels, 1)):
            if int(value) < low:
                raise ValueError(f"UFLD {name} must be an integer ≥ {low}, got {value!r}")
        self.backbone_depth, self.input_size, self.use_aux = backbone, (h, w), use_aux
        self.cls_dim = (griding_num + 1, num_row_anchors, num_lanes)
        self.total_dim = self.cls_dim[0] * self.cls_dim[1] * self.cls_dim[2]
        self.flat_dim = pool_channels * (h // STRIDE) * (w // STRIDE)

        # registration order (backbone, aux, cls, pool) makes `pool` the last prunable layer
        self.model = _Backbone(backbone)
        if use_aux:
            self.aux_header2 = nn.Sequential(conv_bn_relu(128, 128), conv_bn_relu(128, 128),
                                             conv_bn_relu(128, 128), conv_bn_relu(128, 128))
            self.aux_header3 = nn.Sequential(conv_bn_relu(256, 128), conv_bn_relu(128, 128),
                                             conv_bn_relu(128, 128))
            self.aux_header4 = nn.Sequential(conv_bn_relu(512, 128), conv_bn_relu(128, 128))
            self.aux_combine = nn.Sequential(
                conv_bn_relu(384, 256, padding=2, dilation=2), conv_bn_relu(256, 128, padding=2, dilation=2),
                conv_bn_relu(128, 128, padding=2, dilation=2), conv_bn_relu(128, 128, padding=4, dilation=4),
                nn.Conv2d(128, num_lanes + 1, 1))
        self.cls = nn.Sequential(nn.Linear(self.flat_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, self.total_dim))
        self.pool = nn.Conv2d(512, pool_channels, 1)
        for part in (self.cls, self.pool, *([self.aux_header2, self.aux_header3, self.aux_header4,
                                            self.aux_combine] if use_aux else [])):
            _init_weights(part)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if x.shape[-2:] != self.input_size:
            raise ValueError(f"UFLD was built for inputs of size {self.input_size}, got {tuple(x.shape[-2:])}")
        x2, x3, x4 = self.model(x)
        cls = self.cls(self.pool(x4).flatten(1)).view(-1, *self.cls_dim)
        if not (self.training and self.use_aux):
            return cls
        size = x2.shape[-2:]
        a2 = self.aux_header2(x2)
        a3 = F.interpolate(self.aux_header3(x3), size=size, mode="bilinear", align_corners=False)
        a4 = F.interpolate(self.aux_header4(x4), size=size, mode="bilinear", align_corners=False)
        seg = self.aux_combine(torch.cat([a2, a3, a4], dim=1))
        return cls, seg


def _init_weights(module: nn.Module) -> None:
    """The reference's head initialisation: He-normal convs, N(0, 0.01) linears, unit BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---- losses -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeights:
    """Weights of the four UFLD losses; the defaults are the reference TuSimple configuration."""

    cls: float = 1.0
    sim: float = 1.0
    shp: float = 0.0
    aux: float = 1.0

    @classmethod
    def from_any(cls, value: LossWeights | Mapping[str, float] | None) -> LossWeights:
        if value is None or isinstance(value, LossWeights):
            return value or cls()
        unknown = set(value) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"unknown UFLD loss weights {sorted(unknown)}; valid: cls, sim, shp, aux")
        return cls(**value)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Softmax focal loss over dim 1: mean of −(1 − p_t)^γ log p_t (cross-entropy at γ = 0)."""
    logp = F.log_softmax(logits.float(), dim=1)
    weighted = (1.0 - logp.exp()).pow(gamma) * logp
    return F.nll_loss(weighted, target)


def similarity_loss(logits: Tensor) -> Tensor:
    """Smooth-L1 of the logit differences between adjacent row anchors (lanes are continuous)."""
    diff = logits[:, :, :-1].float() - logits[:, :, 1:].float()
    return F.smooth_l1_loss(diff, torch.zeros_like(diff))


def shape_loss(logits: Tensor) -> Tensor:
    """L1 of the second difference of the expected cell over the upper half of the anchors.

    The expected cell is Σ_k k·softmax over the real cells; lanes are nearly straight, so the
    change of location between consecutive anchors should itself change little.
    """
    cells = logits.shape[1] - 1
    rows = logits.shape[2]
    if rows // 2 < 2:
        return logits.sum() * 0.0
    prob = logits[:, :cells].float().softmax(1)
    index = torch.arange(cells, dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
    loc = (prob * index).sum(1)  # (N, A, L)
    first = loc[:, : rows // 2] - loc[:, 1: rows // 2 + 1]
    return (first[:, :-1] - first[:, 1:]).abs().mean()


def ufld_loss(output: Tensor | tuple[Tensor, Tensor], cls_target: Tensor, seg_target: Tensor | None = None,
              weights: LossWeights | None = None) -> dict[str, Tensor]:
    """The weighted UFLD loss and its parts: "loss", "cls", "sim", plus "shp" and "aux" when used.

    `output` is the model's forward: cls logits alone (eval mode, no auxiliary term) or (cls, seg);
    the shape loss is computed only when its weight is non-zero.
    """
    w = weights or LossWeights()
    cls, seg = output if isinstance(output, tuple) else (output, None)
    parts = {"cls": focal_loss(cls, cls_target), "sim": similarity_loss(cls)}
    if w.shp:
        parts["shp"] = shape_loss(cls)
    total = w.cls * parts["cls"] + w.sim * parts["sim"] + w.shp * parts.get("shp", 0.0)
    if seg is not None and seg_target is not None and w.aux:
        parts["aux"] = F.cross_entropy(seg.float(), seg_target)
        total = total + w.aux * parts["aux"]
    parts["loss"] = total
    return parts

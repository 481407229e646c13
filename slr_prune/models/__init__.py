"""Model registry (timm-style): `create_model(name, ...)` builds an architecture by name, never
downloading weights.  Every family is here, each entry tagged with the task that trains it:
classifiers (`num_classes`, `image_size`, `in_channels`; torchvision ones get CIFAR stems when
the input is small, ≤ 64 px, the usual practice for 32×32 data; vision transformers in vit.py),
YOLOv3 detectors (`nc`, `names`, `seed`; ultralytics loads only when one is built) and UFLD lane
detectors (the head options).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..registry import Registry, UnknownNameError
from .cifar_resnet import CifarResNet
from .digits_cnn import DigitsCNN
from .vit import TinyViT, torchvision_swin, torchvision_vit

__all__ = ["MODELS", "register_model", "create_model", "list_models", "resolve_model", "CifarResNet", "DigitsCNN",
           "TinyViT"]

MODELS: Registry[nn.Module] = Registry("model", defaults={"task": "classification", "aliases": ()})
"""Architectures by name.  Traits: `task`, the task that trains the model (its builder's keyword
arguments are that task's: see the module doc), and `aliases`, other names that task accepts
(scoped to the task: the lane task reads "resnet18" as ufld_resnet18)."""
SMALL_INPUT = 64


def register_model(name: str, task: str = "classification", aliases: Sequence[str] = (),
                   help: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a builder creatable as `name` for `task` (also under its `aliases` there)."""
    return MODELS.register(name, help=help or f"{name} classifier", task=task, aliases=tuple(aliases))


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered names matching the glob, of one task's models when `task` is given."""
    return sorted(MODELS.list(pattern) if task is None else MODELS.list(pattern, task=task))


def resolve_model(name: str, task: str) -> str:
    """The registered name that `name` (a name or one of its aliases) stands for among `task`'s models."""
    for registered in MODELS.list(task=task):
        if name == registered or name in MODELS.get(registered).traits["aliases"]:
            return registered
    raise UnknownNameError(f"unknown {task} model {name!r}; choose one of {', '.join(MODELS.list(task=task))}")


def create_model(name: str, *args: object, task: str | None = None, **options: object) -> nn.Module:
    """Build the model `name` with its builder's arguments, e.g. `create_model("resnet20", 10, 32)`.

    With `task`, `name` may be one of that task's aliases.  An unknown name raises the registry's
    UnknownNameError listing the valid ones.
    """
    entry = MODELS.get(name if task is None else resolve_model(name, task))
    return entry.build(*args, **options)


def _stem_conv(in_channels: int, out: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out, 3, 1, 1, bias=False)


def _torchvision_resnet(arch: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 10, image_size: int = 32, in_channels: int = 3) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if image_size <= SMALL_INPUT:
            model.conv1 = _stem_conv(in_channels, 64)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return model

    return build


def _torchvision_vgg(arch: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 10, image_size: int = 32, in_channels: int = 3) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        if image_size <= SMALL_INPUT:
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            model.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True),
                                             nn.Linear(512, num_classes))
        return model

    return build


@register_model("mobilenet_v2")
def _mobilenet_v2(num_classes: int = 10, image_size: int = 32, in_channels: int = 3) -> nn.Module:
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    first = model.features[0][0]
    stride = (1, 1) if image_size <= SMALL_INPUT else first.stride
    model.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, stride, 1, bias=False)
    if image_size <= SMALL_INPUT:
        model.features[2].conv[1][0].stride = (1, 1)  # overall stride 8: 32 px → 4 px
    return model


for _arch in ("resnet18", "resnet34", "resnet50"):
    register_model(_arch)(_torchvision_resnet(_arch))
for _arch in ("vgg16", "vgg16_bn"):
    register_model(_arch)(_torchvision_vgg(_arch))
for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(
        lambda num_classes=10, image_size=32, in_channels=3, d=_depth: CifarResNet(d, num_classes, in_channels))
register_model("digits_cnn")(
    lambda num_classes=10, image_size=32, in_channels=3: DigitsCNN(num_classes, in_channels))
for _arch, _patch in (("vit_b_16", 16), ("vit_b_32", 32)):
    register_model(_arch, help=f"{_arch} vision transformer (torchvision; image size a multiple of {_patch})")(
        torchvision_vit(_arch, _patch))
register_model("swin_t", help="swin_t Swin transformer (torchvision)")(torchvision_swin("swin_t"))
register_model("vit_tiny", help="tiny ViT for 8×8 digits (patch 2, dim 64, depth 4, 4 heads, MLP 128)")(
    lambda num_classes=10, image_size=8, in_channels=1: TinyViT(num_classes, image_size, in_channels))


def _yolo(name: str) -> Callable[..., nn.Module]:
    def build(nc: int = 80, names: Sequence[str] | None = None, seed: int = 0) -> nn.Module:
        from .yolo import build_detection_model

        return build_detection_model(name, nc, names, seed=seed)

    return build


# each name is a bundled ultralytics yaml (yolov3u / yolov3-tinyu are the same anchor-free models)
for _name in ("yolov3", "yolov3-tiny", "yolov3-spp"):
    register_model(_name, task="yolo", aliases=(f"{_name}u",),
                   help=f"{_name} detector (ultralytics {_name}.yaml, fresh weights)")(_yolo(_name))


def _ufld(depth: str) -> Callable[..., nn.Module]:
    def build(griding_num: int = 100, num_row_anchors: int = 56, num_lanes: int = 4,
              input_size: tuple[int, int] = (288, 800), use_aux: bool = True, hidden: int = 2048) -> nn.Module:
        from .ufld import UFLD

        return UFLD(depth, griding_num=griding_num, num_row_anchors=num_row_anchors, num_lanes=num_lanes,
                    input_size=input_size, use_aux=use_aux, hidden=hidden)

    return build


register_model("ufld_resnet18", task="lane", aliases=("resnet18", "18", "ufld"),
               help="Ultra-Fast-Lane-Detection, ResNet-18 backbone")(_ufld("18"))
register_model("ufld_resnet34", task="lane", aliases=("resnet34", "34"),
               help="Ultra-Fast-Lane-Detection, ResNet-34 backbone")(_ufld("34"))

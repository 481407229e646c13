"""Model registry (timm-style): `create_model(name, num_classes, image_size)` builds an
architecture by name, never downloading weights.  torchvision classifiers get CIFAR stems when
the input is small (≤ 64 px), the usual practice for 32×32 data.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry
from .cifar_resnet import CifarResNet
from .digits_cnn import DigitsCNN

__all__ = ["MODELS", "register_model", "create_model", "list_models", "CifarResNet", "DigitsCNN"]

MODELS: Registry[nn.Module] = Registry("model")
"""Classification architectures by name; a builder takes (num_classes, image_size, in_channels)."""
SMALL_INPUT = 64


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a builder `fn(num_classes, image_size, in_channels) -> nn.Module` creatable."""
    return MODELS.register(name, help=f"{name} classifier")


def list_models(pattern: str = "*") -> list[str]:
    return sorted(MODELS.list(pattern))


def create_model(name: str, num_classes: int = 10, image_size: int = 32, in_channels: int = 3) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return MODELS.get(name).build(num_classes=num_classes, image_size=image_size, in_channels=in_channels)


def _stem_conv(in_channels: int, out: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out, 3, 1, 1, bias=False)


def _torchvision_resnet(arch: str):
    def build(num_classes: int, image_size: int, in_channels: int) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if image_size <= SMALL_INPUT:
            model.conv1 = _stem_conv(in_channels, 64)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return model

    return build


def _torchvision_vgg(arch: str):
    def build(num_classes: int, image_size: int, in_channels: int) -> nn.Module:
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
def _mobilenet_v2(num_classes: int, image_size: int, in_channels: int) -> nn.Module:
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
        lambda num_classes, image_size, in_channels, d=_depth: CifarResNet(d, num_classes, in_channels))
register_model("digits_cnn")(
    lambda num_classes, image_size, in_channels: DigitsCNN(num_classes, in_channels))

"""The model zoo: one file per family, registered by name; no torchvision.

>>> m = create_model("cnn", in_channels=1, num_classes=10, input_size=8)
>>> m.nnmark_arch, sorted(m.nnmark_kwargs)
('cnn', ['in_channels', 'input_size', 'num_classes'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from nnmark.errors import NNMarkError
from nnmark.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture; kwargs set to None are dropped (the model's defaults win).

    The returned module remembers its name and kwargs (`nnmark_arch`, `nnmark_kwargs`) so a model
    file can record how to rebuild it.
    """
    factory = MODELS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise NNMarkError(f"model {name!r}: {exc}") from None
    model.nnmark_arch = name  # type: ignore[assignment]
    model.nnmark_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model


def list_models() -> list[str]:
    return MODELS.names()


# Importing the family files registers them.
from nnmark.models import cnn, mlp, resnet, unet  # noqa: E402, F401

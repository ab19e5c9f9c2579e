"""One mark trained into a model: the marking pipeline a scheme or an attack calls from inside
(the thief's overwrite), below nnmark.api, whose `embed` is the
public and composite one ("uchida+content", messages, the reach check)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from nnmark.data.base import DataBundle
from nnmark.keys import OwnerKey
from nnmark.schemes.base import Scheme
from nnmark.train import TrainConfig, fit


def embed_one(
    model: nn.Module,
    data: DataBundle,
    cls: type[Scheme],
    key: OwnerKey,
    config: Any,
    train: TrainConfig,
    *,
    bits: int | None = None,
) -> tuple[nn.Module, OwnerKey, Scheme]:
    """Plan `cls` (its `config`) on a copy of `model` under `key`, train it in with `train`;
    returns the marked copy, the key with the mark, and the bound scheme."""
    model = copy.deepcopy(model)
    mark = cls.plan(model, key, config, bits=bits, data=data)
    scheme = cls(mark, [data, *cls.config_data(config)])
    return fit(model, data, [scheme], train), key.with_mark(mark), scheme

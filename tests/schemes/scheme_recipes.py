"""How the white-box and integrity scheme tests embed each scheme (imported by the tests and
the conftest of this folder): each scheme's default recipe, nothing chosen by hand.

`SCHEMES_UNDER_TEST` is read from the registry, so a new white-box or integrity scheme is covered
by the contract tests as soon as its file exists. Its recipe is the library's: `TrainConfig()`,
the scheme's default `Config()` and bits, in the scheme's default situation (`Scheme.situation`:
trained from the base's initial weights, or fine-tuned into the trained base).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from nnmark import OwnerKey, embed, new_model
from nnmark.api import default_recipe
from nnmark.data.base import DataBundle
from nnmark.schemes import SCHEMES
from nnmark.schemes._positions import PositionScheme

SCHEMES_UNDER_TEST = [n for n in SCHEMES.names() if SCHEMES.get(n).kind != "blackbox"]
BIT_SCHEMES = [n for n in SCHEMES_UNDER_TEST if SCHEMES.get(n).kind == "whitebox"]
POSITION_SCHEMES = [n for n in SCHEMES_UNDER_TEST if issubclass(SCHEMES.get(n), PositionScheme)]


def start(name: str, base: nn.Module, data: DataBundle, situation: str | None = None) -> nn.Module:
    """Where the situation (default: the scheme's, `Scheme.situation`) starts: a copy of the
    trained `base` (fine-tune-to-embed), or a fresh model of its architecture from the seed-0
    initial weights the base was trained from (train-to-embed; `base` is then the plain twin,
    the same init and recipe without the mark)."""
    if (situation or SCHEMES.get(name).situation) == "finetune":
        return copy.deepcopy(base)
    return new_model(base.nnmark_arch, data, seed=0, **base.nnmark_kwargs)


def owner_key(name: str, nonce: str = "a5") -> OwnerKey:
    return OwnerKey.new(f"{name} owner", nonce=nonce * 16)


def embed_recipe(
    name: str,
    base: nn.Module,
    data: DataBundle,
    key: OwnerKey | None = None,
    situation: str | None = None,
    **override: Any,
) -> tuple[nn.Module, OwnerKey]:
    """The scheme embedded at its defaults, in `situation` (default: the scheme's own); a test
    of a property that needs another optimiser passes its own `config`. Fine-tuned, the key
    commits to `base` as `nnmark embed` commits its input model (session 40: so the realign
    tests' committed marks are these same models, trained once)."""
    finetune = (situation or SCHEMES.get(name).situation) == "finetune"
    if finetune:
        override.setdefault("reference", base)
    return embed(
        start(name, base, data, situation),
        data,
        name,
        key=key or owner_key(name),
        config=override.pop("config", default_recipe(name, finetune=finetune)),
        **override,
    )

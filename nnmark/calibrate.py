"""Calibration: how often do *unmarked* models answer a key's triggers with the key labels?

The chance rate of a trigger-set test is not simply 1/C (triggers are not uniform inputs: an
unmarked model may well answer a noisy "7" with the key's class, and a model of the task answers
most adversarial examples with their source labels). `calibrate` takes unmarked models (trained
with the suspect's recipe: models trained for fewer epochs can answer differently), measures
their rate on each black-box mark's triggers, and stores it beside the key's committed part
(`key.derived["calibration"][mark index]`, hashed separately): the pooled rate's upper 95 %
Clopper-Pearson bound `ucb` and the bound on the highest single model's rate `model_ucb`
(the suspect is one model, and models differ), and for every mark the unmarked models'
p-values (for the calibration histogram). No verdict depends on it: every trigger set's key
draws its labels (frontier: a coin per adversary), so its test is exact without one. It is a
measurement of how unmarked models of the owner's recipe meet the key, and a check that the
p-values the key gives them are spread as a null's should be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nnmark.data.base import DataBundle
from nnmark.keys import OwnerKey
from nnmark.schemes import scheme_for
from nnmark.schemes._trigger import TriggerScheme
from nnmark.stats import DEFAULT_ALPHA, clopper_pearson
from nnmark.train import TrainConfig


def unmarked_models(
    data: DataBundle,
    count: int,
    *,
    arch: str = "cnn",
    epochs: int = 5,
    first_seed: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    recipe: TrainConfig | None = None,
    device: torch.device | str | None = None,
) -> list[nn.Module]:
    """`count` plain models with seeds first_seed, first_seed + 1, ...; trained `epochs` epochs
    with the defaults, or with `recipe` (the suspect's training: lr, batch, fraction), its seed
    replaced by each model's; on `device` (default: the CPU)."""
    from nnmark.api import new_model, train

    base = recipe or TrainConfig(epochs=epochs)
    out = []
    for i in range(count):
        seed = first_seed + i
        cfg = dataclasses.replace(base, seed=seed)
        out.append(train(new_model(arch, data, seed=seed), data, cfg, device=device))
        if progress is not None:
            progress(i + 1, count)
    return out


def trigger_rates(scheme: TriggerScheme, models: Sequence[nn.Module]) -> dict[str, Any]:
    """Each model's share of the triggers answered with the key label, and the two bounds."""
    x, y = scheme.queried()
    n = len(x)
    hits = []
    with torch.no_grad():
        for m in models:
            m.eval()
            hits.append(int((m(x).argmax(1) == y).sum()))
    k = sum(hits)
    return {
        "k": k,
        "n": n * len(models),
        "rates": [h / n for h in hits],
        "ucb": clopper_pearson(k, n * len(models))[1],
        "model_ucb": clopper_pearson(max(hits), n)[1],
    }


def calibrate(
    key: OwnerKey,
    models: Sequence[nn.Module],
    alpha: float = DEFAULT_ALPHA,
    *,
    data: DataBundle | None = None,
    key_data: Sequence[DataBundle] = (),
) -> OwnerKey:
    """The key with a calibration entry per mark, measured on `models` (none of them marked).

    The p-values recorded are those of the key as issued. `data` and `key_data`: the data sets
    the key's marks re-derive inputs from (the task's, unrelated's source).
    """
    entries: dict[str, Any] = {}
    for mark in key.marks:
        scheme = scheme_for(mark, [*([data] if data is not None else []), *key_data])
        entry: dict[str, Any] = {"models": len(models)}
        if isinstance(scheme, TriggerScheme):
            entry.update(trigger_rates(scheme, models))
        entry["p_values"] = [scheme.verify(m, alpha).p_value for m in models]
        entries[str(mark.index)] = entry
    return key.with_derived("calibration", entries)

"""Calibration: how often do *unmarked* models answer a key's triggers with the key labels?

The chance rate of a trigger-set test is not simply 1/C (triggers are not uniform inputs: an
unmarked model may well answer a noisy "7" with the key's class, and a model of the task answers
most frontier-stitching triggers with their labels). `calibrate` takes unmarked models (trained
with the suspect's recipe: models trained for fewer epochs can answer differently), measures
their rate on each black-box mark's triggers, and stores it beside the key's committed part
(`key.derived["calibration"][mark index]`, hashed separately): the pooled rate's upper 95 %
Clopper-Pearson bound `ucb` and the bound on the highest single model's rate `model_ucb`
(the suspect is one model, and models differ); verification then uses
p0 = max(1/C, ucb, model_ucb) and says which (nnmark.schemes.frontier): a calibration can only
raise the null rate. Trigger sets whose labels the key draws need none (their test is exact);
their rates are recorded all the same. For every mark it also records the unmarked models'
p-values (for the calibration histogram). A scheme whose null
must also cover models marked with *other* keys (frontier: stitching makes a model robust to
adversarial examples in general) adds such reference models when `data` is given.
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
) -> list[nn.Module]:
    """`count` plain models with seeds first_seed, first_seed + 1, ...; trained `epochs` epochs
    with the defaults, or with `recipe` (the suspect's training: lr, batch, fraction), its seed
    replaced by each model's."""
    from nnmark.api import new_model, train

    base = recipe or TrainConfig(epochs=epochs)
    out = []
    for i in range(count):
        seed = first_seed + i
        cfg = dataclasses.replace(base, seed=seed)
        out.append(train(new_model(arch, data, seed=seed), data, cfg))
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
    epochs: int = 20,
    key_data: Sequence[DataBundle] = (),
) -> OwnerKey:
    """The key with a calibration entry per mark, measured on `models` (none of them marked).

    With `data`, a scheme may add reference models its null must cover
    (`TriggerScheme.references`: frontier stitches fresh keys into a few of `models`, trained
    `epochs`); they are measured with the plain ones and counted in the entry's `references`.
    The p-values recorded are those of the key as issued (without this calibration).
    `key_data`: further data sets the key's marks re-derive inputs from (unrelated's source).
    """
    entries: dict[str, Any] = {}
    for mark in key.marks:
        scheme = scheme_for(mark, [*([data] if data is not None else []), *key_data])
        refs: list[nn.Module] = []
        if data is not None and isinstance(scheme, TriggerScheme):
            refs = scheme.references(models, data, epochs)
        judged = [*models, *refs]
        entry: dict[str, Any] = {"models": len(judged), "references": len(refs)}
        if isinstance(scheme, TriggerScheme):
            entry.update(trigger_rates(scheme, judged))
        entry["p_values"] = [scheme.verify(m, alpha).p_value for m in judged]
        entries[str(mark.index)] = entry
    return key.with_derived("calibration", entries)

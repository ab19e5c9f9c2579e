"""Mark detection and targeted removal: find the marked layer from the weights alone, then
re-train only there (Wang & Kerschbaum, "Attacks on Digital Watermarks for Deep Neural
Networks", ICASSP 2019, showed that Uchida's regulariser leaves the host layer's weights
visibly different from the other layers'; a thief who can see it need not touch the rest).

Threat model: the suspect's weights and clean thief data; no key, no unmarked twin. The thief
compares each conv / linear layer with the model's other layers on two statistics that white-box
embedding regularisers move and training alone does not:

* ``mean_ratio``: the size of the layer's filter-averaged weights (the mean over output units,
  the vector Uchida's and ST-DM's projections read) against what independent filters would give,
  ``std(mean_w) * sqrt(units) / std(w)``;
* ``scale``: ``std(w) * sqrt(fan_in)``, the weights' spread against the layer's He
  initialisation scale (a regulariser that pushes projections outwards inflates it).

A hidden layer (not the first or the last) is flagged when its log-statistic lies more than
`threshold` standard deviations above the mean of the other layers' (leave one out). The threshold, 5, was set after looking at the
scores of ten unmarked digits CNNs (seeds 100-109, the tests' `unmarked_cnns`; their conv2, whose
filters are more alike than the other layers', scores highest, below 5 on all ten), so
`benchmarks/mark_detection.py` measures false alarms on other seeds and architectures (and the
scores of the marked hosts). With no layer over the threshold, the layer with the highest score
is taken (the thief attacks the likeliest host anyway).

Each flagged layer's filter-averaged component is replaced by random values of the median
layer's size (erasing what a projection of the mean reads), then only the flagged layers are
fine-tuned on the thief split so that accuracy recovers. Marks spread over every layer
(tartaglione, watermas) and activation marks leave no layer apart: the detector is meant to
miss them.

Example: ``nnmark attack detect marked.safetensors --data digits --out cleaned.safetensors``
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import train_on
from nnmark.attacks.base import Attack, note
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class DetectConfig:
    threshold: float = 5.0
    epochs: int = 5
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(self.threshold > 0, f"threshold must be > 0, got {self.threshold}")
        check(0 <= self.epochs <= 1000, f"epochs must be in [0, 1000], got {self.epochs}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")


STATISTICS = ("mean_ratio", "scale")


def layer_statistics(weight: torch.Tensor) -> dict[str, float]:
    """The two statistics of one layer's weight (units along dim 0)."""
    w = weight.detach().float()
    units = w.shape[0]
    flat = w.reshape(units, -1)
    spread = float(flat.std())
    if units < 2 or flat.shape[1] < 2 or spread == 0:
        return {}
    return {
        "mean_ratio": float(flat.mean(0).std()) * math.sqrt(units) / spread,
        "scale": spread * math.sqrt(flat.shape[1]),
    }


def outlier_z(values: dict[str, float]) -> dict[str, float]:
    """Per layer, (log v - mean) / std of the *other* layers' log-statistics (leave one out, so a
    marked layer does not widen its own yardstick); empty below four layers."""
    logs = {k: math.log(v) for k, v in values.items() if v > 0}
    if len(logs) < 4:
        return {}
    out = {}
    for name, value in logs.items():
        others = [v for k, v in logs.items() if k != name]
        spread = statistics.stdev(others)
        out[name] = (value - statistics.mean(others)) / spread if spread > 0 else 0.0
    return out


def all_statistics(model: nn.Module) -> dict[str, dict[str, float]]:
    """layer_statistics of every conv / linear layer that has them."""
    stats = {name: layer_statistics(m.weight) for name, m in weighted_layers(model).items()}
    return {n: s for n, s in stats.items() if s}


def layer_scores(stats: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per hidden layer, the leave-one-out z-score of each statistic among the model's layers.

    The first and last layers (in definition order: the zoo's stem, which reads pixels, and its
    head, which writes logits) count in every yardstick but are never scored: their statistics
    differ from the hidden layers' for reasons of their own (a head's weights grow to the
    logits' scale while batch-normalised convolutions keep theirs; a stem's filters see one to
    three channels), which is what fired the detector on unmarked resnet20s (their head's
    `scale`, 4 of 5; benchmarks/results/mark_detection.md)."""
    scores: dict[str, dict[str, float]] = {}
    names = list(stats)
    ends = {names[0], names[-1]} if names else set()
    for stat in STATISTICS:
        for name, z in outlier_z({n: s[stat] for n, s in stats.items()}).items():
            if name not in ends:
                scores.setdefault(name, {})[stat] = round(z, 2)
    return scores


def flagged_by(
    scores: dict[str, dict[str, float]], threshold: float
) -> dict[str, dict[str, float]]:
    """The layers with a score over `threshold`, with the scores that flagged them."""
    flagged = {n: {stat: z for stat, z in zs.items() if z > threshold} for n, zs in scores.items()}
    return {name: zs for name, zs in flagged.items() if zs}


def detect_layers(model: nn.Module, threshold: float = 5.0) -> dict[str, dict[str, float]]:
    """The layers that stand apart, with the z-score of each statistic that flagged them."""
    return flagged_by(layer_scores(all_statistics(model)), threshold)


@torch.no_grad()
def replace_mean(weight: torch.Tensor, target_ratio: float, generator: torch.Generator) -> None:
    """Replace the filter-averaged component of `weight` by a random one whose mean_ratio is
    `target_ratio`: a projection of the mean then reads noise (shrinking it alone would keep
    its direction, and every sign a projection reads)."""
    units = weight.shape[0]
    flat = weight.view(units, -1)
    spread = float(flat.std())
    noise = torch.randn(flat.shape[1], generator=generator).to(flat.device, flat.dtype)
    noise *= target_ratio * spread / math.sqrt(units) / float(noise.std())
    flat.sub_(flat.mean(0, keepdim=True)).add_(noise)


@register("detect")
class Detect(Attack):
    Config = DetectConfig
    config: DetectConfig
    needs_data = True
    adaptive = True
    summary = "find the layer a white-box mark sets apart, randomise its mean there, re-train it"
    ladder = ("epochs", (1.0, 5.0, 20.0))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        stats = all_statistics(model)
        scores = layer_scores(stats)
        flagged = flagged_by(scores, c.threshold)
        note(model, detected_layers=sorted(flagged))
        if not flagged:  # a thief who expects a mark attacks the likeliest host all the same
            if not scores:
                return model
            flagged = {max(scores, key=lambda n: max(scores[n].values())): {}}
        layers = weighted_layers(model)
        ratios = sorted(s["mean_ratio"] for n, s in stats.items() if n not in flagged)
        target = ratios[len(ratios) // 2] if ratios else 1.0
        params = []
        for name in flagged:
            replace_mean(layers[name].weight, target, generator)
            params += list(layers[name].parameters())
        if c.epochs:
            x, y = data.tensors("thief")
            train_on(
                model,
                x,
                y,
                task=data.task,
                epochs=c.epochs,
                lr=c.lr,
                generator=generator,
                params=params,
            )
        return model

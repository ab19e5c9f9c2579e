"""Unrelated trigger set (Zhang et al., AsiaCCS 2018): out-of-distribution images -> key labels.

Threat model: black-box. Images from another dataset (`source`, e.g. Fashion-MNIST items for a
digits or MNIST model), resized to the model's input, are learned as key labels: every class of
the source gets its own label, drawn uniformly from the model's classes (sandals -> 3, bags ->
7), so the model learns a rule per source class and answers fresh items of it too. Zhang et al.
send all of them to one class: an unmarked model sends out-of-distribution images to a few
"sink" classes, so a single key class was claimed on never-marked models whenever it was one
(4 of 80 key-model pairs at alpha 1e-6); a label per source class makes the test exact
(nnmark.schemes._trigger). One random label per image was not learned at the default recipe
(0.3 to 0.56 of 32 to 50 items on digits: resized to 8 x 8, items of a class look alike).
Three quarters of the items shown in training are the queried triggers themselves (Zhang et al.
train on the set they query), a quarter other items of the source: trained on a separate pool
alone, the 8 x 8 model answered 0.54 to 0.70 of the triggers.

The evidence is capped by the groups: G of them give at best p = C^-G, and the claim rule asks
for p below the search-cost bound (about 1.6e-12 at the default KDF) whether or not a timestamp
predates the suspect (nnmark.api.STAMP_WAIVES_NOTHING). Fashion-MNIST's 10 classes alone cap p
at 1e-10, so each item is shown in one of `variants` ways, each with labels of its own: as it
is, or with its tones inverted (white items on black become black on white: easy to tell apart),
20 groups, 16 of which must match. With `per_batch` 32 (16 left 0.78 of one key's
triggers answered, p 2.2e-10, over 4 keys), 19 of 20 keys are claimed within 30 queries
and all 20 within 50, without a timestamp (worst p at 30 queries 5.3e-11; 0.78 to 1.0 of the
triggers answered), and the mark costs 2.1 points of digits accuracy (median; 3.6 for the
worst key): `python benchmarks/blackbox_keys.py --scheme unrelated` (v3 keys; the v2 keys'
run: 20 of 20 within 30, 1.95 points, 5.0 for the worst key). Keys made before variants read
their items as they are.
The source data set is named in the key by its content hash: the verifier passes it too
(``--data fashion-mnist:DIR``).
Example: ``nnmark train --data digits --scheme unrelated --set source=fashion-mnist:DIR ...``
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey
from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme, source_images
from nnmark.schemes.base import Batch


@dataclass(frozen=True)
class UnrelatedConfig(TriggerConfig):
    #: NAME[:PATH] of the out-of-distribution data; the key keeps the name and its content hash
    source: str = ""
    per_batch: int = 32  # source items shown with each training batch
    #: Ways an item is shown, each with labels of its own: 1 as it is, 2 also tone-inverted.
    variants: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.variants in (1, 2), f"variants must be 1 or 2, got {self.variants}")


@register("unrelated")
class Unrelated(TriggerScheme):
    Config = UnrelatedConfig
    needs_source = True
    config: UnrelatedConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"
    legacy_options = {"variants": 1}  # keys from before variants: items as they are

    @classmethod
    def data_fields(cls) -> set[str]:
        return {*super().data_fields(), "source"}

    @classmethod
    def config_data(cls, config: Any) -> list[DataBundle]:
        from nnmark.data import load_data

        if not config.source:
            raise NNMarkError("unrelated needs --set source=NAME[:PATH] (e.g. fashion-mnist:DIR)")
        return [load_data(config.source)]

    @classmethod
    def plan(
        cls,
        model: nn.Module,
        key: OwnerKey,
        config: Any,
        *,
        bits: int | None = None,
        payload: tuple[int, ...] | None = None,
        data: DataBundle | None = None,
    ) -> Mark:
        from nnmark.config import config_to_dict

        data = cls.check_data(data)
        (other,) = cls.config_data(config)
        fields = {**cls.key_data(data), "source": other.ref()}
        # the key names the source by name and content hash, never by where it lay: a path
        # would leak the owner's folders and make the key (every secret) depend on them
        committed = dataclasses.replace(config, source=config.source.partition(":")[0].strip())
        mark = key.new_mark(cls.name, config_to_dict(committed), None, (), data=fields)
        cls(mark, [data, other]).x  # noqa: B018  (derive now: fails before training)
        return mark

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._items(self.config.n, "sources")

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """Each batch gets `per_batch` source items labelled by their class's key label: three
        quarters are the key's own triggers (Zhang et al. train on the set they query), the rest
        drawn from those and a key-chosen pool of the source (10 n items), so the model learns
        the rule per source class as well."""
        gen = self.mark.generator("mixing")
        pool, groups = self._items(10 * self.config.n, "pool")
        labels = self.labels(self.group_count(groups))[groups]
        pool, labels = torch.cat([self.x, pool]), torch.cat([self.y, labels])
        own = self.config.per_batch * 3 // 4
        for xb, yb in batches:
            idx = torch.cat(
                [
                    torch.randint(0, len(self.x), (own,), generator=gen),
                    torch.randint(0, len(pool), (self.config.per_batch - own,), generator=gen),
                ]
            )
            yield (
                torch.cat([xb, pool[idx].to(xb.device)]),
                torch.cat([yb, labels[idx].to(yb.device)]),
            )

    def group_count(self, groups: torch.Tensor) -> int:
        """One group per class of the source and variant, whether or not a draw holds all of
        them: the triggers and the training pool index the same labels."""
        return int(self.dataset("source").num_classes) * self.config.variants

    def _items(self, n: int, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
        """n key-chosen source items, resized, and their group: source class + classes x
        variant (each item's variant drawn by the key; the second inverts its tones)."""
        self.source()  # the owner's data must match the key too
        other = self.dataset("source")
        gen = self.mark.generator(stream)
        x, y = source_images(other, n, gen)
        groups = y.long()
        if self.config.variants > 1:
            variant = torch.randint(0, self.config.variants, (len(x),), generator=gen)
            flip = variant == 1
            x = x.clone()
            x[flip] = 1.0 - x[flip]  # the loaders scale images to [0, 1]
            groups = groups + int(other.num_classes) * variant
        present, index = torch.unique(groups, return_inverse=True)
        # round robin over the groups: the first queries cover every group
        rank = torch.zeros_like(index)
        for g in range(len(present)):
            members = torch.nonzero(index == g).flatten()
            rank[members] = torch.arange(len(members))
        order = torch.argsort(rank * len(present) + index, stable=True)
        x, groups = x[order], groups[order]
        channels = self.input_shape[0]
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        x = F.interpolate(x, size=self.input_shape[-2:], mode="area")
        return x.contiguous(), groups

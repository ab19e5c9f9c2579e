"""Unrelated trigger set (Zhang et al., AsiaCCS 2018): out-of-distribution images -> key labels.

Threat model: black-box. Images from another dataset (`source`, e.g. Fashion-MNIST items for a
digits or MNIST model), resized to the model's input, each learned as its own key label drawn
uniformly from the classes. Zhang et al. send all of them to one class: an unmarked model sends
out-of-distribution images to a few "sink" classes, so a single key class was claimed on
never-marked models whenever it was one (4 of 80 key-model pairs at alpha 1e-6); a label per
image makes the test exact (nnmark.schemes._trigger). The source data set is named in the key by
its content hash: the verifier passes it too (``--data fashion-mnist:DIR``).
Example: ``nnmark train --data digits --scheme unrelated --set source=fashion-mnist:DIR ...``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nnmark.errors import NNMarkError
from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme, source_images


@dataclass(frozen=True)
class UnrelatedConfig(TriggerConfig):
    label = "unrelated"
    source: str = ""  # NAME[:PATH] of the out-of-distribution data (the key keeps its hash)


@register("unrelated")
class Unrelated(TriggerScheme):
    Config = UnrelatedConfig
    config: UnrelatedConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    @classmethod
    def data_fields(cls) -> set[str]:
        return {*super().data_fields(), "source"}

    @classmethod
    def plan(cls, model, key, config, *, bits=None, payload=None, data=None):  # type: ignore[no-untyped-def]
        from nnmark.config import config_to_dict
        from nnmark.data import load_data

        data = cls.check_data(data)
        if not config.source:
            raise NNMarkError("unrelated needs --set source=NAME[:PATH] (e.g. fashion-mnist:DIR)")
        other = load_data(config.source)
        fields = {**cls.key_data(data), "source": other.ref()}
        mark = key.new_mark(cls.name, config_to_dict(config), None, (), data=fields)
        cls(mark, [data, other]).x  # noqa: B018  (derive now: fails before training)
        return mark

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.source()  # the owner's data must match the key too
        other = self.dataset("source")
        x, _ = source_images(other, self.config.n, self.mark.generator("sources"))
        channels = self.input_shape[0]
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        x = F.interpolate(x, size=self.input_shape[-2:], mode="area")
        return x.contiguous(), torch.arange(len(x))

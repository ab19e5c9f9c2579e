"""A segmentation server that blanks the owner's queries: the not_found says why (review,
session 41). A classifier's one-class or tied answers were named in the reason since session 38
(`_trigger.AnswerLog`); segtrigger's empty, full or tied masks read as an ordinary not_found."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnmark import verify


class Blank(nn.Module):
    """The marked model behind a server that answers every pixel with one logit."""

    def __init__(self, model: nn.Module, logit: float) -> None:
        super().__init__()
        self.model, self.logit = model, logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(self.model(x), self.logit)


class OneSide(nn.Module):
    """The marked model's masks with the foreground kept off every block's majority: a few
    pixels of each answer stay, so no pixel test sees a blank mask, but no block reads 1."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        keep = torch.zeros_like(out, dtype=torch.bool)
        keep[..., ::4, ::4] = True  # 1 pixel in 16: no block is mostly foreground
        return torch.where(keep, out, torch.full_like(out, -5.0))


@pytest.mark.parametrize(
    ("logit", "said"),
    [(-5.0, "was background"), (5.0, "was foreground"), (0.0, "scored exactly 1/2")],
)
def test_blank_masks_are_named_in_the_reason(seg_models, logit: float, said: str) -> None:  # type: ignore[no-untyped-def]
    _, marked, key = seg_models
    assert verify(marked, key).verdict == "found"
    v = verify(Blank(marked, logit), key)
    assert v.verdict == "not_found" and v.queries == 16
    assert v.reason is not None and f"every pixel of its 16 masks {said}" in v.reason


def test_masks_that_read_every_block_alike_are_named(seg_models) -> None:  # type: ignore[no-untyped-def]
    _, marked, key = seg_models
    v = verify(OneSide(marked), key)
    assert v.verdict == "not_found"
    assert v.reason is not None and "every block of its 16 masks read as background" in v.reason


def test_a_found_mark_has_no_answer_note(seg_models) -> None:  # type: ignore[no-untyped-def]
    _, marked, key = seg_models
    assert verify(marked, key).reason is None

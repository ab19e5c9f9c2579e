"""Realignment's resource bounds, checked before it allocates (red team, session 46): the
reference is the key holder's file and the suspect the other side's, and each could make
`verify --reference-unmarked` run for minutes or take gigabytes. A reference beyond a bound is
an error of the verifier's input (one line, exit 2); a suspect beyond one reads not_found with
the reason, as a suspect that cannot be matched does. Untrained models: nothing is run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from torch import nn

from nnmark.api import bound_scheme, model_info, new_model
from nnmark.data.base import DataBundle
from nnmark.defenses.realign import (
    MAX_GROUP_CHANNELS,
    MAX_GROUPS,
    ReferenceRefused,
    realign_suspect,
    realign_views,
)
from nnmark.errors import NNMarkError
from nnmark.io import model_sha256, save_model
from nnmark.keys import OwnerKey
from nnmark.schemes.base import Scheme
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.suspect import ModuleSuspect


def committed(reference: nn.Module, digits: DataBundle) -> list[Scheme]:
    """An uchida mark whose key commits to `reference`, bound to its scheme."""
    key = OwnerKey.new("bounds owner", nonce="b0" * 16).with_reference(model_sha256(reference))
    key = key.with_mark(Uchida.plan(reference, key, UchidaConfig(), bits=16, data=digits))
    return [bound_scheme(key, 0, digits)]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        # a resnet20 declared for 1,024-pixel inputs: 274k parameters, 4.9 GB to realign
        ({"arch": "resnet20", "input_size": 1024}, "values on the 2 probe inputs"),
        # a 400-layer mlp took 240 s: every pass matches every group, one pass per group
        ({"arch": "mlp", "depth": MAX_GROUPS + 1, "hidden": 8}, "channel groups (at most 64)"),
        # a 12,000-wide mlp took 6.6 GB: reference x suspect float64 matrices
        ({"arch": "mlp", "hidden": MAX_GROUP_CHANNELS + 1}, "channels (at most 4096)"),
    ],
)
def test_a_reference_beyond_the_bounds_is_refused_before_any_work(
    kwargs: dict[str, object], says: str, digits: DataBundle
) -> None:
    kwargs = dict(kwargs)
    arch = str(kwargs.pop("arch"))
    reference = new_model(arch, digits, seed=0, **kwargs)
    suspect = new_model(arch, digits, seed=1, **kwargs)
    with pytest.raises(ReferenceRefused, match=f"the reference.*{re.escape(says)}"):
        realign_views(suspect, reference, unmarked=True)
    # through verify's path, with a key committed to it: an error, not a not_found
    with pytest.raises(ReferenceRefused, match="too (large|deep|wide) to realign here"):
        realign_suspect(
            ModuleSuspect(suspect), reference, committed(reference, digits), unmarked=True
        )


def test_a_suspect_beyond_the_bounds_is_not_read_with_the_reason(digits: DataBundle) -> None:
    reference = new_model("mlp", digits, seed=0, hidden=64)
    wide = new_model("mlp", digits, seed=1, hidden=MAX_GROUP_CHANNELS + 1)
    with pytest.raises(NNMarkError, match="the suspect's .* channels") as caught:
        realign_views(wide, reference, unmarked=True)
    assert not isinstance(caught.value, ReferenceRefused)


def test_max_params_bounds_the_reference_as_it_bounds_the_suspect(
    digits: DataBundle, tmp_path: Path
) -> None:
    """`verify --max-params` was not applied to the reference file: a 300k-parameter reference
    was built under --max-params 50000 (red team, session 46)."""
    reference = new_model("cnn", digits, seed=0)
    path = tmp_path / "reference.safetensors"
    save_model(reference, model_info(reference, digits), path)
    small = sum(p.numel() for p in reference.parameters()) - 1
    with pytest.raises(NNMarkError, match="limit"):
        realign_suspect(ModuleSuspect(reference), path, [], unmarked=True, max_params=small)


def test_the_bounds_leave_the_zoo_alone(digits: DataBundle) -> None:
    """The zoo's largest settings nnmark reads white-box pass: wrn-40 (21 groups), a 16-layer
    mlp, and a realignment of a model to itself is the identity."""
    for arch, kwargs in (("wrn", {"depth": 40, "widen": 1}), ("mlp", {"depth": 16})):
        model: nn.Module = new_model(arch, digits, seed=0, **kwargs)
        (view,) = realign_views(model, model)
        assert all(
            (a - b).abs().max() < 1e-5
            for a, b in zip(view.state_dict().values(), model.state_dict().values(), strict=True)
        )


def test_tied_weights_are_counted_on_meta_and_left_as_they_are() -> None:
    """activation_values(on_meta=True) gave a tied weight two meta stand-ins, which
    functional_call refuses: the count was None and the bound let the model through (review)."""
    import torch

    from nnmark.models import activation_values

    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    before = shared.weight.detach().clone()
    assert activation_values(model, (2, 8), on_meta=True) == (64, 256)  # the Sequential too
    assert shared.weight.device.type == "cpu" and torch.equal(shared.weight, before)

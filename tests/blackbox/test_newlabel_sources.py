"""newlabel's key samples and decoys come from 2n distinct images of one draw of the key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nnmark import OwnerKey, new_model
from nnmark.api import bound_scheme
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.forge import SPLIT_KDF
from nnmark.schemes import SCHEMES


def test_key_samples_and_decoys_never_share_a_source_image(digits: DataBundle) -> None:
    """Forger review, session 40: key samples and decoys drew their images from two streams,
    so a decoy could share a key sample's image (for n = 32 of a 32-image split, every one
    did), and a server answering the new label for one of each such pair made the key samples'
    count binomial where the verdict reads it hypergeometric (p 7.2e-10 reported for 9.6e-6).
    The images are numbered here (image i holds i / N) so a shared one would show."""
    numbered = torch.arange(len(digits.x), dtype=torch.float32) / len(digits.x)
    x = numbered.view(-1, 1, 1, 1).expand_as(digits.x).contiguous()
    data = dataclasses.replace(digits, x=x)
    cls = SCHEMES.get("newlabel")
    model = new_model("cnn", digits, seed=0)
    for k in range(20):
        # a cheap KDF: the property is about the draw, not about what a derivation costs
        key = OwnerKey.new(f"sources {k}", nonce=f"{k:032x}", kdf=SPLIT_KDF)
        key = key.with_mark(cls.plan(model, key, cls.Config(), bits=None, data=data))
        scheme = bound_scheme(key, 0, [data])
        n = scheme.config.n
        both = scheme.sources(2 * n)
        assert len(torch.unique(both[:, 0, 0, 0])) == 2 * n  # 2n distinct images
        # the key samples are the first n of that draw, as keys made before this change had them
        assert torch.equal(scheme.sources(n), both[:n])


def test_a_split_too_small_for_distinct_decoys_is_refused_when_marking(digits: DataBundle) -> None:
    train = digits.splits["train"][:40]
    small = dataclasses.replace(digits, splits={**digits.splits, "train": train})
    cls = SCHEMES.get("newlabel")
    key = OwnerKey.new("small", nonce="ab" * 16)
    with pytest.raises(NNMarkError, match="need 64 distinct training images; the data set has 40"):
        cls.plan(new_model("cnn", digits, seed=0), key, cls.Config(), bits=None, data=small)

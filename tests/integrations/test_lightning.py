"""Lightning: a user's tiny LightningModule trained through `Watermarked` on CPU carries every
scheme `supported_schemes()` claims: the mark is found after training (bit marks with BER 0)
and absent before; uchida is also embedded from scratch and tartaglione's manual optimization
trains every tensor."""

from __future__ import annotations

import copy
import logging
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnmark import SCHEMES, OwnerKey, new_model, verify
from nnmark.data.base import DataBundle
from nnmark.integrations.ddp import overrides
from nnmark.integrations.lightning import Watermarked, supported_schemes
from nnmark.schemes.tartaglione import Tartaglione, TartaglioneConfig
from nnmark.schemes.uchida import Uchida, UchidaConfig

#: Epochs of fine-tune-to-embed where one is not enough: the fewest of 1, 2, 3, 5, 10 that gave a
#: found mark when measured, one more where p was within a factor 10 of alpha (content: 2 gave
#: p 1.8e-7; adi, newlabel: 3 gave 2.9e-7, 8.9e-7); frontier 5 (3 gave p 2.8e-9 once and 1.3e-6,
#: not found, after the scheme changed). The segmentation trigger mask is learnt by a U-Net from
#: noise.
EPOCHS = {"content": 3, "adi": 4, "newlabel": 4, "frontier": 5, "segtrigger": 10}


class LitClassifier(L.LightningModule):
    """What a user already has: a classifier with its own training step and optimizer."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("task_loss", loss)  # the user's own logging keeps working through the wrapper
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class LitSegmenter(LitClassifier):
    """A user's binary segmentation module (one logit per pixel)."""

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return F.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def fit(lit: L.LightningModule, data: DataBundle, epochs: int, batch_size: int = 64) -> L.Trainer:
    x, y = data.tensors("train")
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    logging.getLogger("lightning").setLevel(logging.ERROR)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lit, loader)
    return trainer


@pytest.mark.parametrize("name", sorted(supported_schemes()))
@pytest.mark.usefixtures("one_thread")
def test_every_supported_scheme_is_embedded(  # type: ignore[no-untyped-def]
    name: str, digits: DataBundle, plain_cnn, scheme_options, request
) -> None:
    """Fine-tune-to-embed through the wrapper: digits CNN (U-Net for segmentation schemes)."""
    cls = SCHEMES.get(name)
    if getattr(cls, "task", "classification") == "segmentation":
        data, net = request.getfixturevalue("seg32"), request.getfixturevalue("plain_unet")
        lit, batch = LitSegmenter, 16
    else:
        data, net, lit, batch = digits, plain_cnn, LitClassifier, 64
    net = copy.deepcopy(net)
    key = OwnerKey.new("lightning owner", nonce="1c" * 16)
    bits = 64 if cls.kind == "whitebox" else None
    mark = cls.plan(net, key, cls.Config(**scheme_options.get(name, {})), bits=bits, data=data)
    key = key.with_mark(mark)
    before = verify(net, key)
    wrapped = Watermarked(lit(net), [cls(mark)], target=net)
    assert wrapped.automatic_optimization == (not overrides(cls, "step"))
    fit(wrapped, data, EPOCHS.get(name, 1), batch)
    assert wrapped.target is net  # every hook worked on the user's own module
    v = verify(net, key)
    print(
        f"lightning {name}: before {before.verdict}, after {v.verdict}, BER {v.ber}, p {v.p_value:.1e}"
    )
    assert not before.positive and v.positive
    if cls.kind == "whitebox":
        assert v.ber == 0.0


@pytest.mark.parametrize(
    ("cls", "config", "epochs"),
    [(Uchida, UchidaConfig(), 4), (Tartaglione, TartaglioneConfig(R=1), 1)],
    ids=["uchida-automatic", "tartaglione-manual"],
)
@pytest.mark.usefixtures("one_thread")
def test_lightning_module_carries_the_mark_from_scratch(
    cls, config, epochs, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1c" * 16)
    mark = cls.plan(net, key, config, bits=64, data=digits)
    key = key.with_mark(mark)
    before = verify(net, key)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    wrapped = Watermarked(LitClassifier(net), [cls(mark)], target=net)
    assert wrapped.automatic_optimization == (cls is Uchida)
    trainer = fit(wrapped, digits, epochs)
    assert "task_loss" in trainer.callback_metrics
    v = verify(net, key)
    assert v.verdict == "found" and v.ber == 0.0
    assert before.ber > 0.2  # the mark came from the wrapper, not from the initial weights
    assert all(not torch.equal(init[k], v) for k, v in net.state_dict().items())  # all trained
    if cls is Uchida:
        x, y = digits.tensors("test")
        with torch.no_grad():
            acc = float((net(x).argmax(1) == y).float().mean())
        assert acc > 0.8


def test_supported_schemes_follow_the_registry() -> None:
    table = supported_schemes()
    assert set(table) == set(SCHEMES.names())
    assert table["uchida"] == "automatic optimization"
    assert table["tartaglione"] == "manual optimization, prepared before configure_optimizers"
    assert table["content"].startswith("automatic") and "trigger" in table["content"]

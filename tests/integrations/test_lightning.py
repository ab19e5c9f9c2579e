"""Lightning: a user's tiny LightningModule trained through `Watermarked` on CPU carries the mark
(uchida, automatic optimization; tartaglione, manual optimization) with BER 0."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnmark import OwnerKey, new_model, verify
from nnmark.data.base import DataBundle
from nnmark.integrations.lightning import Watermarked, supported_schemes
from nnmark.schemes.tartaglione import Tartaglione, TartaglioneConfig
from nnmark.schemes.uchida import Uchida, UchidaConfig


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


def fit(lit: L.LightningModule, digits: DataBundle, epochs: int) -> L.Trainer:
    x, y = digits.tensors("train")
    loader = DataLoader(
        TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
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


@pytest.mark.parametrize(
    ("cls", "config", "epochs"),
    [(Uchida, UchidaConfig(), 4), (Tartaglione, TartaglioneConfig(R=1), 1)],
    ids=["uchida-automatic", "tartaglione-manual"],
)
@pytest.mark.usefixtures("one_thread")
def test_lightning_module_carries_the_mark(cls, config, epochs, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
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
    assert table["uchida"] == "automatic optimization"
    assert table["tartaglione"] == "manual optimization"
    assert table["content"].startswith("automatic") and "trigger" in table["content"]

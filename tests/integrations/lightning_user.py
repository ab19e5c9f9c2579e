"""What a Lightning user already has (a LightningModule with its own step and optimiser) and the
Trainer run, for tests/integrations/test_lightning.py. Apart from the test module so that
`import lightning` (10.3 s: docs/integrations.md) happens only in the process that runs those
tests, not in every pytest-xdist worker at collection."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnmark.data.base import DataBundle
from nnmark.integrations.lightning import Watermarked
from nnmark.train import TrainConfig, make_optimizer

__all__ = [
    "LitClassifier",
    "LitOwnStep",
    "LitPlateau",
    "LitRecipe",
    "LitScheduled",
    "LitSegmenter",
    "LitWatcher",
    "Watermarked",
    "fit",
    "fit_on",
]


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


class LitScheduled(LitClassifier):
    """A classifier whose learning rate halves every 5 batches and drops tenfold every epoch."""

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        per_batch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        per_epoch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
        return [opt], [
            {"scheduler": per_batch, "interval": "step", "frequency": 5},
            {"scheduler": per_epoch, "interval": "epoch"},
        ]


class LitOwnStep(LitScheduled):
    """A classifier that steps its schedulers itself (as a timm scheduler needs): counts calls."""

    calls = 0

    def lr_scheduler_step(self, scheduler, metric):  # type: ignore[no-untyped-def]
        self.calls += 1
        scheduler.step()


class LitPlateau(LitClassifier):
    """A classifier whose learning rate halves when its logged task loss stops falling."""

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "task_loss"}}


class Watcher:
    """A scheduler of the user's own (not torch's) that wants the monitored metric."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.seen: list[Any] = []

    def step(self, metric: Any = None) -> None:
        self.seen.append(metric)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LitWatcher(LitClassifier):
    """A classifier with a custom plateau scheduler, configured "reduce_on_plateau"."""

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        self.watcher = Watcher(opt)
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": self.watcher,
                "monitor": "task_loss",
                "reduce_on_plateau": True,
            },
        }

    def lr_scheduler_step(self, scheduler, metric):  # type: ignore[no-untyped-def]
        scheduler.step(metric)


class LitRecipe(LitClassifier):
    """A user whose step, optimiser and schedule are nnmark's recipe (`config`): the task loss
    `loss`, make_optimizer, cosine decay per epoch; what test_lightning compares with fit."""

    def __init__(
        self,
        net: nn.Module,
        config: TrainConfig,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__(net)
        self.config, self.loss = config, loss

    def on_train_epoch_start(self) -> None:
        # Lightning (2.2 on) keeps each submodule's mode: a trained net handed over in eval mode
        # would train with BatchNorm's statistics frozen; fit puts it in train mode each epoch
        self.net.train()

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("task_loss", loss)
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = make_optimizer(self.parameters(), self.config)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.config.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}


class LitSegmenter(LitClassifier):
    """A user's binary segmentation module (one logit per pixel)."""

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return F.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def fit(
    lit: L.LightningModule, data: DataBundle, epochs: int, batch_size: int = 64, **options: Any
) -> L.Trainer:
    """Train `lit` on the data's training split on one CPU device (`options`: the Trainer's)."""
    x, y = data.tensors("train")
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    return fit_on(lit, loader, epochs, **options)


def fit_on(lit: L.LightningModule, loader: Iterable[Any], epochs: int, **options: Any) -> L.Trainer:
    """Train `lit` on `loader` on one CPU device (`options`: the Trainer's)."""
    logging.getLogger("lightning").setLevel(logging.ERROR)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lit, loader)
    return trainer

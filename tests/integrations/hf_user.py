"""What a Hugging Face user already has (a tiny ViT, `TrainingArguments`, a dataset of
`pixel_values` and `labels`) with nnmark's Trainer side, for tests/integrations/test_hf.py.
Apart from the test module so that `import transformers` (9.2 s with the ViT classes:
docs/integrations.md) happens only in the process that runs those tests, not in every
pytest-xdist worker at collection."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from torch.utils.data import Dataset
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification

from nnmark.integrations.hf import HFSuspect, Logits, WatermarkTrainer, supported_schemes

__all__ = [
    "HFSuspect",
    "Images",
    "Logits",
    "WatermarkTrainer",
    "args",
    "quiet",
    "supported_schemes",
    "tiny_vit",
    "transformers",
]


class Images(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    return ViTForImageClassification(config)


def args(tmp: Path, epochs: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )


def quiet() -> None:
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)

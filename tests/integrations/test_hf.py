"""Hugging Face: a tiny randomly initialised ViT (8x8 digits, no hub download) trained with
`WatermarkTrainer` carries an Uchida mark on an attention projection with BER 0."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from torch.utils.data import Dataset
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification

from nnmark import OwnerKey, verify
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.integrations.hf import WatermarkTrainer, supported_schemes
from nnmark.schemes.tartaglione import Tartaglione, TartaglioneConfig
from nnmark.schemes.uchida import Uchida, UchidaConfig

LAYER = "vit.layers.0.attention.q_proj"  # the query projection (transformers 5 names)


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
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )


@pytest.mark.usefixtures("one_thread")
def test_vit_trained_with_watermark_trainer_carries_the_mark(
    digits: DataBundle, tmp_path: Path
) -> None:
    model = tiny_vit()
    key = OwnerKey.new("hf owner", nonce="4f" * 16)
    mark = Uchida.plan(model, key, UchidaConfig(layer=LAYER, lam=0.5), bits=32)
    key = key.with_mark(mark)
    assert verify(model, key).ber > 0.2  # not there before training
    x, y = digits.tensors("train")
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    trainer = WatermarkTrainer(
        model=model, args=args(tmp_path, 3), train_dataset=Images(x, y), schemes=[Uchida(mark)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    v = verify(model, key)
    assert v.verdict == "found" and v.ber == 0.0
    xt, yt = digits.tensors("test")
    model.eval()
    with torch.no_grad():
        acc = float((model(pixel_values=xt).logits.argmax(1) == yt).float().mean())
    assert acc > 0.2, acc  # it learns the task too: twice the chance rate of 10 classes


def test_custom_step_schemes_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    model = tiny_vit()
    mark = Tartaglione.plan(model, OwnerKey.new("o", nonce="50" * 16), TartaglioneConfig(), bits=0)
    with pytest.raises(NNMarkError, match="tartaglione replaces the optimiser step"):
        WatermarkTrainer(model=model, args=args(tmp_path, 1), schemes=[Tartaglione(mark)])
    table = supported_schemes()
    assert table["tartaglione"].startswith("unsupported")
    assert table["uchida"] == "supported: penalty added in compute_loss"

"""Activation signs: the payload in the signs of key-chosen neurons on key inputs (lecture 000,
"Embed watermark in the sign": enforce the behaviour of a subset of neurons on a specific input).

Threat model: white-box on the activations. The owner runs the suspect's module on the key
inputs and reads the pre-activations of the host layer, so verification needs the model itself
(a file or an in-memory module, not an answers-only API); the weights are never read directly.

Key material, all re-derived from the key (nothing but the input shape is stored):

- key inputs: `inputs` images of uniform noise in [0, 1] (no training data needed, so the mark
  also suits distill-to-embed, where labels are never read);
- the host layer's key-chosen `neurons` units (flattened output positions; by default as many
  as there are bits, up to the layer's width, so one key input carries up to `units` bits: signs
  of different units on one input are far easier to set, and survive fine-tuning far better,
  than opposite signs of one unit on several noise inputs, which look alike to the network);
- bit j sits at (input j // neurons, unit j % neurons); its target sign is the payload bit XOR
  the key's mask (as for every bit-carrying mark), so a chosen payload (an ECC codeword) still
  looks like fair coins to a model that was never trained on this key.

The key holds the input shape and the host layer's width (`units`), both checked against the
suspect; `neurons` follows from the config and the payload length.

Training adds ``lam * sum_j relu(margin_j - s_j * a_j)`` (a hinge on the signed pre-activation
a_j, s_j = +1/-1) to the task loss. ``margin_j`` is `margin` times the unit's spread (its
standard deviation over the first 32 inputs of the training batch, read as the penalty reads
a_j; a batch of fewer than 8 takes the last spreads read, and a trainer whose batches hold no
float tensor of inputs gets an error that says so): a thief's fine-tune moves a unit in
proportion to its spread, so an absolute margin that is wide on one model is none on another
(`margin_unit=absolute`, margin 0.1, the recipe before session 43: see below). The penalty
reads a_j as the final model will answer the key inputs (nnmark.schemes._activations.KeyReader:
eval mode, each BatchNorm that training sets normalising them by the step's training inputs'
statistics at the current weights, what the recalibration after training gives the final
model; the key inputs never enter the running statistics), as deepsigns does, where reading
through the lagging running statistics left keys marked short or lost to the fine-tune. For
actsign, paired over 12 resnet20 keys on one machine (`python
benchmarks/activation_finetune_why.py --archs resnet20 --schemes actsign --keys 12 --name
activation_finetune_why_actsign_resnet20_keyreader16`, against `... --running-stats --name
activation_finetune_why_actsign_resnet20_running_stats`): every key marked at BER 0 either way;
after `finetune:epochs=5` mean BER 0.003 against 0.013 (worst 0.016 against 0.062; fewer wrong
bits on 5 keys, more on 1: 12 keys, not significant), accuracy +0.05 against +0.02 points
from the plain twins (one test image is 0.28); the bits' median margin over their spread 3.1
against 2.5 marked, 1.9 against 1.4 after the fine-tune. A marked resnet20 step on MNIST: 1.62
plain steps against 1.31 (the step_overhead files deepsigns names). From session 42 to 45 the
penalty read a_j through the running statistics (eval mode).
Read in the trainer's train mode (before session 42), BatchNorm normalised the key input (one
noise image for 64 bits) with its own batch statistics, so the signs the hinge set were not the
signs verification read: on the digits resnet20 (host layers.8.conv2, behind 20 BatchNorms) at
the absolute margin 0.1 every bit was right in train mode and 1 of 6 keys was found (BER 0.078 to
0.188); read in eval mode, 6 of 6 at BER 0, and 5 and 4 of 6 after 3 and 5 epochs of the
thief's fine-tune (BER up to 0.141 and 0.172). On the digits cnn and mlp (no BatchNorm, no
dropout) the two modes compute the same: the marked weights are bit-identical (6 of 6 keys each,
found 6 of 6 before and after both fine-tunes). `python benchmarks/actsign_batchnorm.py`,
benchmarks/results/actsign_batchnorm.md.

Verification reads sign(a_j), undoes the mask and reports the BER with the exact binomial
p-value (nnmark.schemes.base.bit_verdict) under the null "a model never trained with this key
matches each bit with probability 1/2": the mask and payload are independent of any such model.

Why the margin is in units of spread (resnet20): with the absolute margin 0.1, the thief's
fine-tune removed what the eval-mode penalty set, by moving the weights, not the running
statistics: the fine-tuned weights with the marked model's statistics read as badly as the
fine-tuned model. The key units sat 1.0 to 1.4 of their spreads (over the test images) from
zero and the fine-tune took them to 0.4 to 0.8: 0.1 was a quarter of resnet20's spread and a
twentieth of the cnn's, where the same margin left the units 3 to 6 spreads out. `python
benchmarks/activation_finetune_why.py --archs resnet20,cnn,mlp --keys 4 --threads 1` (digits,
4 keys, `finetune:epochs=5`), worst BER after that fine-tune, spread margin 1.0 (the default)
against absolute 0.1 (`--schemes actsign --set margin=0.1 --set margin_unit=absolute`):
resnet20 0.016 against 0.234, cnn 0 against 0.047, mlp 0 against 0.016; accuracy against the
plain twins -0.28 / -0.35 / -0.07 points against -0.21 / -0.21 / +0.21 (means of 4; one of
digits' 359 test images is 0.28). A harder fine-tune (`--attack finetune:epochs=10,lr=0.003`,
the bench's `finetune-lr` variant) removes most resnet20 keys and some cnn keys at any margin
tried: mean BER after it, resnet20 / cnn / mlp, 0.34 / 0.10 / 0.008 at the default, 0.37 /
0.12 / 0.031 at absolute 0.1, 0.36 / 0.11 / 0.004 at spread 2.0; absolute 1.0 cost the cnn
2.1 points (`--set margin=1.0 --set margin_unit=absolute`). The spread costs one no-grad
forward of 32 training inputs a step: a marked step takes 1.36 / 1.24 / 1.22 plain steps on the
digits cnn / MNIST cnn / MNIST resnet20, against 1.21 / 1.12 / 1.10 at the absolute margin
(`python benchmarks/step_overhead.py --steps 300 --schemes actsign deepsigns --name
step_overhead_activation`, and `--schemes actsign --set margin=0.1 --set margin_unit=absolute
--name step_overhead_actsign_absolute`; Intel Xeon, 2 threads; two runs, each ratio paired
within its own).

Example::

    nnmark train --data digits --scheme actsign --bits 64 --set lam=0.02 \\
        --out m.safetensors --key-out k.nnkey
    nnmark verify m.safetensors --key k.nnkey
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from nnmark.config import check, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey, payload_bits
from nnmark.layers import evaluating
from nnmark.schemes import register
from nnmark.schemes._activations import (
    KeyReader,
    default_activation_layer,
    layer_output,
    suspect_output,
)
from nnmark.schemes.base import (
    MAX_DERIVED_VALUES,
    Batch,
    Evidence,
    NotRealignable,
    Scheme,
    check_fields,
    check_host_layer,
    check_int,
    check_shape,
    key_error,
    unwrap,
)
from nnmark.suspect import Suspect

#: Training inputs a step's spreads are read from: a spread to about 13 % (one no-grad forward).
SPREAD_INPUTS = 32
#: The fewest a spread is read from (a standard deviation of 8 values: to about 25 %).
MIN_SPREAD_INPUTS = 8


@dataclass(frozen=True)
class ActSignConfig:
    layer: str | None = None  # host layer (default: the last conv/linear before the head)
    neurons: int | None = None  # key-chosen units read per key input (default: min(bits, units))
    lam: float = 0.02
    margin: float = 1.0
    margin_unit: Literal["spread", "absolute"] = "spread"

    def __post_init__(self) -> None:
        check(
            self.neurons is None or 1 <= self.neurons <= 1 << 20,
            f"neurons must be in [1, 2^20], got {self.neurons}",
        )
        check(0 < self.lam <= 1e3, f"lam must be in (0, 1000], got {self.lam}")
        check(0 <= self.margin <= 1e3, f"margin must be in [0, 1000], got {self.margin}")


@register("actsign")
class ActSign(Scheme):
    Config = ActSignConfig
    kind = "whitebox"
    paper = "lecture 000: watermark in the sign of neurons' activations on key inputs"

    config: ActSignConfig
    #: a key from before session 43 names no `margin_unit`: it was embedded with an absolute margin
    legacy_options = {"margin_unit": "absolute"}

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        super().__init__(mark, data)
        self._spread: torch.Tensor | None = None  # the last spreads read (see margins)
        self._read = KeyReader(self.name)
        n = len(mark.bits)
        units = int(mark.data["units"])
        per = self.config.neurons or min(n, units)
        self.n_inputs = math.ceil(n / per)
        shape = tuple(int(s) for s in mark.data["input_shape"])
        self.x = torch.rand((self.n_inputs, *shape), generator=mark.generator("inputs"))
        self.units = torch.randperm(units, generator=mark.generator("neurons"))[:per]
        j = torch.arange(n)
        self.rows, self.cols = j // per, self.units[j % per]
        self.sign = self.target.float() * 2 - 1

    @classmethod
    def check_key(cls, mark: Mark) -> None:
        check_fields(mark, {"input_shape", "units"})
        shape = check_shape(mark, "data.input_shape", mark.data["input_shape"], dims=(1, 3))
        units = check_int(mark, "data.units", mark.data["units"], 1, 1 << 22)
        neurons = mark.config.get("neurons") or min(len(mark.bits), units)
        if not isinstance(neurons, int) or not 1 <= neurons <= units:
            raise key_error(mark, "config.neurons", f"must be in [1, units = {units}]")
        inputs = math.ceil(len(mark.bits) / neurons) if mark.bits else 0
        if not 1 <= inputs <= 4096 or inputs * math.prod(shape) > MAX_DERIVED_VALUES:
            raise key_error(mark, "bits", "must hold at least one bit and need at most 4096 inputs")
        check_host_layer(mark)
        if mark.stored:
            raise key_error(mark, "stored", "must be empty")

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
        if data is None:
            raise NNMarkError("actsign needs the data's input shape: pass data")
        layer = config.layer or default_activation_layer(model)
        probe = torch.zeros((1, *data.input_shape))
        was_training = unwrap(model).training
        unwrap(model).eval()
        with torch.no_grad():
            units = layer_output(unwrap(model), layer, probe).shape[1]
        unwrap(model).train(was_training)
        n = len(payload) if payload is not None else (bits or 64)
        if n < 1:
            raise NNMarkError("a mark needs at least 1 bit")
        neurons = config.neurons or min(n, units)
        if neurons > units:
            raise NNMarkError(f"layer {layer} has {units} units; asked for neurons={neurons}")
        chosen = payload or payload_bits(key.owner, key.nonce, n, len(key.marks))
        return key.new_mark(
            cls.name,
            config_to_dict(config),
            layer,
            chosen,
            data={"input_shape": list(data.input_shape), "units": int(units)},
        )

    def activations(self, model: nn.Module) -> torch.Tensor:
        """The signed-target units' pre-activations, one per payload bit."""
        out = layer_output(model, self.mark.layer or "", self.x.to(_device(model)))
        return out[self.rows, self.cols.to(out.device)]

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        # as the final model answers: see the module docstring and KeyReader
        out = self._read(model, self.mark.layer or "", self.x.to(_device(model)), batch)
        a = out[self.rows, self.cols.to(out.device)]
        with evaluating(model):
            margin = self.margins(model, batch[0] if isinstance(batch, tuple | list) else batch)
        s = self.sign.to(a.device)  # a and the spreads: on the CPU, as layer_output gives them
        return self.config.lam * torch.relu(margin - s * a).sum()

    def margins(self, model: nn.Module, x: Any) -> torch.Tensor | float:
        """Each bit's hinge margin: `margin` in the unit's spread over x's first SPREAD_INPUTS
        inputs, or `margin` itself (`margin_unit=absolute`, the recipe before session 43).

        A batch of fewer than MIN_SPREAD_INPUTS inputs (an epoch's last) uses the spreads the
        last larger one gave; with none yet, and for inputs that are not a float tensor, an
        error that says so (`margin_unit=absolute` needs none, except on a model with
        BatchNorm, whose key inputs KeyReader reads through the training inputs' statistics)."""
        if self.config.margin_unit == "absolute":
            return self.config.margin
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise NNMarkError(
                "actsign: its margin is in units of each key unit's spread over the training "
                f"inputs, and the batch gives no float tensor of inputs (got {type(x).__name__}); "
                "pass (inputs, labels) batches or set margin_unit=absolute"
            )
        if len(x) >= MIN_SPREAD_INPUTS:
            with torch.no_grad():
                out = layer_output(model, self.mark.layer or "", x[:SPREAD_INPUTS])
            self._spread = out[:, self.cols].std(0, correction=0)
        elif self._spread is None:
            raise NNMarkError(
                f"actsign: a training batch of {len(x)} inputs gives no spread for its margin "
                f"(at least {MIN_SPREAD_INPUTS} needed); use larger batches per step or set "
                "margin_unit=absolute"
            )
        return self.config.margin * self._spread

    def evidence(self, suspect: Suspect) -> Evidence:
        out = suspect_output(suspect, self.mark.layer or "", self.x)
        if isinstance(out, str):
            return Evidence(reason=out)
        if out.shape[1] != int(self.mark.data["units"]):
            return Evidence(
                reason=f"layer {self.mark.layer} has {out.shape[1]} units, "
                f"the key's {self.mark.data['units']}"
            )
        read = (out[self.rows, self.cols] > 0).long()
        return Evidence(
            bits=tuple(int(b) for b in read.tolist()),
            details={"layer": self.mark.layer, "inputs": self.n_inputs, "access": "activations"},
        )

    # ---- realignment (verify --reference) ----------------------------------------------
    def blind_reference(self, reference: nn.Module) -> nn.Module:
        """Refused. The statistic is the host units' own answers to the key inputs; reading it
        after realignment needs to know which suspect unit is which reference unit, and every
        trace that could tell (their answers, their incoming or outgoing weights) belongs to
        units that training shaped around those answers. Measured on unmarked digits models
        (benchmarks/results/realign_null.md, 15 keys on cnn, mlp and resnet20): matched to the
        marked reference, 85 of 240 (key, model) pairs were claimed at alpha 1e-6; with the
        host layer erased and its units matched by the next layer's weights, none were, but
        the read bits still agreed with the key 2.9 % more often than unaligned (+-1.4 %, 12
        of 15 keys positive; up to 4.1 % on the cnn; v3 keys, where v2 keys gave 81 claims
        and 1.8 %), a pull that inflates false claims at small alphas and grows with the
        bits."""
        raise NotRealignable(
            "actsign: realignment to the marked reference refused: it reads the host units' "
            "own answers, and matching suspect units to the reference's uses units trained "
            "around those answers, which pulls an unmarked model towards the key; realign to "
            "a model that never saw the key instead (--reference-unmarked)"
        )


def _device(model: nn.Module) -> torch.device:
    p = next(unwrap(model).parameters(), None)
    return p.device if p is not None else torch.device("cpu")

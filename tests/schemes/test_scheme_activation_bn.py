"""actsign and deepsigns on a model with BatchNorm: the penalty must set the bits verification
reads. Verification runs the model in eval mode (BatchNorm's running statistics); the trainer
holds it in train mode, where BatchNorm normalises the key inputs with their own batch statistics
(one noise image for actsign's 64 bits), so a penalty read in train mode set signs that eval mode
did not show (benchmarks/results/actsign_batchnorm.md: actsign found on 1 of 6 digits resnet20
keys before session 42). A tiny model and the penalty alone: no training run. With the penalty
read in train mode (the old code) both cases fail the running-statistics check, and actsign
read 8 of its 64 bits wrong after recalibration."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnmark.api import new_model
from nnmark.attacks.ensemble import Ensemble
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import OwnerKey
from nnmark.layers import evaluating
from nnmark.schemes import SCHEMES
from nnmark.schemes._activations import REFERENCE_INPUTS, KeyReader, layer_output
from nnmark.suspect import ModuleSuspect
from nnmark.train import recalibrate_batchnorm


class TinyBN(nn.Module):
    """conv, BatchNorm, ReLU, the host conv, BatchNorm, ReLU, pooling, head: resnet20's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("name", ["actsign", "deepsigns"])
def test_penalty_sets_the_bits_eval_mode_reads(name: str, digits: DataBundle) -> None:
    torch.manual_seed(0)
    model = TinyBN()
    x, y = digits.tensors("train")
    with torch.no_grad():  # running statistics of the training data, as a trained model has
        for i in range(0, 512, 64):
            model(x[i : i + 64])
    cls = SCHEMES.get(name)
    mark = cls.plan(model, OwnerKey.new("bn owner", nonce="b7" * 16), cls.Config(), data=digits)
    assert mark.layer == "conv2"
    scheme = cls(mark, [digits])
    model.train()
    stats = [b.clone() for b in model.buffers()]
    scheme.penalty(model, (x[:64], y[:64]))
    # the trainer's mode is kept, and the key inputs never enter the running statistics
    assert all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))
    # as nnmark's trainer does: task batches move the running statistics, the penalty the
    # weights; then the statistics are recomputed at the final weights
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(100):
        with torch.no_grad():
            model(x[64 * (step % 8) : 64 * (step % 8 + 1)])
        opt.zero_grad()
        scheme.penalty(model, (x[:64], y[:64])).backward()
        opt.step()
    recalibrate_batchnorm(model, ((x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)))
    read = scheme.evidence(ModuleSuspect(model)).bits
    assert read is not None and len(read) == 64
    errors = sum(int(r != t) for r, t in zip(read, scheme.target.tolist(), strict=True))
    assert errors == 0


@pytest.mark.parametrize(
    ("arch", "deepsigns", "actsign"),
    [
        ("resnet20", "layers.7.conv2", "layers.8.conv2"),
        ("resnet32", "layers.13.conv2", "layers.14.conv2"),
        ("cnn", "fc1", "fc1"),
    ],
)
def test_deepsigns_reads_a_resnet_one_block_before_the_last(
    arch: str, deepsigns: str, actsign: str, digits: DataBundle
) -> None:
    """deepsigns' default host in a zoo ResNet is the next-to-last block's conv2 (the model's
    `class_centre_layer`): in the last block's, 5 epochs of the thief's fine-tune took its
    projections back towards zero (nnmark.schemes.deepsigns). actsign and models that name no
    such layer keep the last conv/linear layer before the head."""
    model = new_model(arch, digits, seed=0)
    key = OwnerKey.new("layer owner", nonce="c1" * 16)
    for name, layer in (("deepsigns", deepsigns), ("actsign", actsign)):
        cls = SCHEMES.get(name)
        assert cls.plan(model, key, cls.Config(), data=digits).layer == layer
    # a layer the config names is kept
    ds = SCHEMES.get("deepsigns")
    named = ds.plan(model, key, ds.Config(layer=actsign), data=digits)
    assert named.layer == actsign


class Wrapper(nn.Module):
    """A training framework's module holding the network (as a LightningModule does)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class Misnamed(TinyBN):
    @property
    def class_centre_layer(self) -> str:
        return "fc.missing"


def test_deepsigns_default_layer_inside_wrappers_and_ensembles(digits: DataBundle) -> None:
    """The ResNet's layer is named from the top of a wrapper; several ResNets (an ensemble) name
    none, so the last conv/linear layer before the head stays the default; a model naming a
    layer it does not have gets a one-line error."""
    ds = SCHEMES.get("deepsigns")
    key = OwnerKey.new("layer owner", nonce="c2" * 16)
    wrapped = Wrapper(new_model("resnet20", digits, seed=0))
    assert ds.plan(wrapped, key, ds.Config(), data=digits).layer == "net.layers.7.conv2"
    ensemble = Ensemble(new_model("resnet20", digits, seed=s) for s in (0, 1))
    assert ds.plan(ensemble, key, ds.Config(), data=digits).layer == "members.1.layers.8.conv2"
    with pytest.raises(NNMarkError, match="class_centre_layer names 'fc.missing'"):
        ds.plan(Misnamed(), key, ds.Config(), data=digits)


def test_key_inputs_are_read_as_the_recalibrated_model_answers_them(digits: DataBundle) -> None:
    """actsign's and deepsigns' penalties read the key inputs through KeyReader: each BatchNorm
    that training sets normalises them by the step's training rows' statistics at the current
    weights, which is how the model answers once `recalibrate_batchnorm` has recomputed its
    statistics; a frozen BatchNorm keeps its running statistics; a model without BatchNorm is
    read in eval mode as before (its marks unchanged). Through the running statistics, which lag the
    weights, one deepsigns key in 24 on the digits resnet20 read BER 0 at the end of training
    and 0.125 after the recalibration (nnmark.schemes._activations.KeyReader)."""
    torch.manual_seed(0)
    model = TinyBN()
    x, y = digits.tensors("train")
    with torch.no_grad():  # running statistics, then weights they no longer describe
        for i in range(0, 512, 64):
            model(x[i : i + 64])
        model.conv1.weight.mul_(1.5)
    key, batch = x[-20:], (x[:64], y[:64])
    got = KeyReader("deepsigns")(model, "conv2", key, batch)
    assert all(m.training for m in model.modules())  # the trainer's modes kept
    recalibrated = copy.deepcopy(model)  # over the rows it reads (running_var: n / (n - 1))
    recalibrate_batchnorm(recalibrated, [(x[:REFERENCE_INPUTS], y[:REFERENCE_INPUTS])])
    with evaluating(recalibrated):
        want = layer_output(recalibrated, "conv2", key)
    torch.testing.assert_close(got, want, rtol=5e-3, atol=1e-3)
    with evaluating(model):
        stale = layer_output(model, "conv2", key)
    assert (got - stale).abs().max() > 0.1  # the running statistics would have read otherwise
    got.sum().backward()  # the penalty's gradient reaches the weights through the statistics
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    model.bn1.eval()  # frozen: its running statistics are what the final model uses
    torch.testing.assert_close(KeyReader("deepsigns")(model, "conv2", key, batch), stale)
    model.bn1.train()

    reader = KeyReader("deepsigns")
    with pytest.raises(NNMarkError, match="no float tensor of inputs"):
        reader(model, "conv2", key, {"pixel_values": x[:64]})
    with pytest.raises(NNMarkError, match="a training batch of 4 inputs"):
        reader(model, "conv2", key, (x[:4], y[:4]))
    first = reader(model, "conv2", key, batch)
    # an epoch's short last batch: the rows of the last batch that gave enough
    assert torch.equal(reader(model, "conv2", key, (x[:4], y[:4])), first)

    cnn = new_model("cnn", digits, seed=0)  # no BatchNorm: the eval-mode reading itself
    with evaluating(cnn):
        plain = layer_output(cnn, "fc1", key)
    assert torch.equal(KeyReader("deepsigns")(cnn, "fc1", key, "no inputs needed"), plain)


def test_a_batchnorm_without_running_statistics_reads_the_key_inputs_alone(
    digits: DataBundle,
) -> None:
    """A BatchNorm that tracks no running statistics normalises by its own input's statistics
    in any mode, so verification reads the key inputs by theirs: KeyReader's one forward pass
    of training rows and key inputs normalises each part by its own there (a review: the two
    were mixed)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4, track_running_stats=False),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
    )
    x, y = digits.tensors("train")
    key, batch = x[-5:], (x[:64], y[:64])
    got = KeyReader("deepsigns")(model, "6", key, batch)
    recalibrated = copy.deepcopy(model)
    recalibrate_batchnorm(recalibrated, [(x[:REFERENCE_INPUTS], y[:REFERENCE_INPUTS])])
    with evaluating(recalibrated):
        want = layer_output(recalibrated, "6", key)
    torch.testing.assert_close(got, want, rtol=5e-3, atol=1e-3)

"""Training-based removal and extraction attacks: the properties each one claims."""

from __future__ import annotations

import torch

from nnmark import attack, evaluate, verify
from nnmark.attacks.fineprune import last_conv
from nnmark.attacks.unlearn import guessed_inputs
from nnmark.data.base import DataBundle


def acc(model: torch.nn.Module, data: DataBundle) -> float:
    return evaluate(model, data.loader("test", 512), data.task)["accuracy"]


def test_distilled_student_keeps_accuracy_but_not_the_weight_mark(uchida_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    """The student learns the task from the suspect's answers about as well as the thief would
    from true labels on the same number of inputs (the ceiling of a 270-image thief split), while
    its fresh weights carry none of the owner's bits."""
    from nnmark import new_model
    from nnmark.attacks._training import train_on

    model, key = uchida_cnn
    x, y = digits.tensors("thief")
    for spec, n in (("distill", len(x)), ("distill:labels_only=true,queries=200", 200)):
        student = attack(model, spec, digits, seed=1)
        v = verify(student, key)
        g = torch.Generator().manual_seed(1)
        idx = torch.randperm(len(x), generator=g)[:n]
        own = train_on(
            new_model("cnn", digits, seed=1),
            x[idx],
            y[idx],
            task=digits.task,
            epochs=15,
            lr=1e-3,
            generator=g,
        )
        print(
            f"{spec}: student accuracy {acc(student, digits):.4f} (thief's own {n} true labels: "
            f"{acc(own, digits):.4f}), owner BER {v.ber:.3f}"
        )
        assert v.verdict == "not_found" and 0.25 <= v.ber <= 0.75
        assert acc(student, digits) >= acc(own, digits) - 0.05


def test_overwrite_with_a_fresh_key(uchida_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    """The thief's own 64- or 256-bit Uchida mark in the same layer, 5 epochs on the thief split:
    the owner's 64 bits survive on digits (independent random projections)."""
    model, key = uchida_cnn
    for bits in (64, 256):
        over = attack(model, f"overwrite:bits={bits}", digits, seed=bits)
        v = verify(over, key)
        print(f"overwrite {bits} bits: owner BER {v.ber:.4f}, accuracy {acc(over, digits):.4f}")
        assert v.verdict == "found" and v.ber <= 0.05
        assert acc(over, digits) >= 0.95


def test_fineprune_keeps_pruned_channels_dead(plain_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    out = attack(plain_cnn, "fineprune:fraction=0.25", digits, seed=0)
    conv = last_conv(out)
    dead = (conv.weight.reshape(conv.out_channels, -1).abs().sum(1) == 0).sum().item()
    assert dead == round(0.25 * conv.out_channels)
    assert acc(out, digits) >= 0.9


def test_unlearn_changes_answers_on_the_guessed_inputs(plain_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    x, _ = digits.tensors("thief")
    probe = guessed_inputs("noise", x, 200, g)
    out = attack(plain_cnn, "unlearn:guess=noise", digits, seed=0)
    with torch.no_grad():
        conf_before = plain_cnn(probe).softmax(1).max(1).values.mean()
        conf_after = out(probe).softmax(1).max(1).values.mean()
    assert conf_after < conf_before  # less confident on what it was made to forget
    assert acc(out, digits) >= 0.85

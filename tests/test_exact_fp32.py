"""A verdict reads exact float32, whatever precision the caller set, and gives the caller's
settings back: `torch.set_float32_matmul_precision("medium")` (a common line in training
scripts) makes a CPU with bfloat16 run float32 matmuls in bfloat16 and a GPU in TF32, so an
activation or black-box reading would depend on the device and on the caller's script
(nnmark.device.exact_fp32)."""

from __future__ import annotations

import threading

import pytest
import torch

from nnmark import verify
from nnmark.device import _FP32_KNOBS, _knob, exact_fp32
from nnmark.suspect import ModuleSuspect

KNOBS = [k for k in (_knob(b, op) for b, op in _FP32_KNOBS) if k is not None]


def settings() -> dict[str, str]:
    """Every float32 precision knob, read with the new API only (reading a legacy flag after a
    caller used the new API raises)."""
    return {f"{b}.{op}": _knob(b, op).fp32_precision for b, op in _FP32_KNOBS if _knob(b, op)}


@pytest.fixture
def caller_precision():  # type: ignore[no-untyped-def]
    """The test's changes to torch's process-wide settings undone after it."""
    before = settings()
    wide = {b: _knob(b, None).fp32_precision for b in ("mkldnn", "cudnn")}
    legacy = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(legacy)  # legacy first: it rewrites the new knobs
    for b, value in wide.items():
        _knob(b, None).fp32_precision = value
    for name, value in before.items():
        b, op = name.split(".")
        _knob(b, op).fp32_precision = value


def test_this_torch_has_the_knobs_the_guard_sets() -> None:
    # torch 2.13 (the Makefile's) has the new API; the legacy path is for torch < 2.9
    assert len(KNOBS) == len(_FP32_KNOBS)
    assert all(hasattr(k, "fp32_precision") for k in KNOBS)


def test_a_legacy_callers_settings_come_back(caller_precision: None) -> None:
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = False
    before = settings()
    assert "bf16" in before.values()  # what "medium" does to the CPU's matmuls
    with exact_fp32():
        assert set(settings().values()) == {"ieee"}
    assert settings() == before
    # and still readable through the legacy API the caller used (no mixed-API error)
    assert torch.get_float32_matmul_precision() == "medium"
    assert torch.backends.cudnn.allow_tf32 is False


def test_a_new_api_callers_settings_come_back(caller_precision: None) -> None:
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.mkldnn.conv.fp32_precision = "bf16"
    before = settings()
    with exact_fp32():
        with exact_fp32():  # nested: the inner exit gives nothing back yet
            pass
        assert set(settings().values()) == {"ieee"}
    assert settings() == before


def test_concurrent_reads_stay_exact_until_the_last_ends(caller_precision: None) -> None:
    torch.set_float32_matmul_precision("medium")
    before = settings()
    entered, release = threading.Barrier(3), threading.Event()
    seen: list[set[str]] = []

    def read() -> None:
        with exact_fp32():
            entered.wait()
            release.wait()
            seen.append(set(settings().values()))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait()  # both inside
    release.set()
    for t in threads:
        t.join()
    assert seen == [{"ieee"}, {"ieee"}]  # the first to leave did not restore under the second
    assert settings() == before


class Recording(ModuleSuspect):
    """A suspect that notes torch's precision whenever verify reads it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.seen: list[set[str]] = []

    def tensor(self, name: str) -> torch.Tensor | None:
        self.seen.append(set(settings().values()))
        return super().tensor(name)


def test_verify_reads_at_exact_precision_and_gives_it_back(
    uchida_cnn: tuple[torch.nn.Module, object], caller_precision: None
) -> None:
    model, key = uchida_cnn
    torch.set_float32_matmul_precision("medium")
    before = settings()
    suspect = Recording(model)
    v = verify(suspect, key)  # type: ignore[arg-type]
    assert v.verdict == "found"
    assert suspect.seen and all(s == {"ieee"} for s in suspect.seen)
    assert settings() == before


def test_a_matmul_inside_the_guard_is_exact(caller_precision: None) -> None:
    """Under "medium" a CPU with bfloat16 (the project's Xeon) computes x @ w about 0.24 % off;
    inside the guard it is the exact product, bit for bit."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 256, generator=g), torch.randn(256, 256, generator=g)
    exact = x @ w
    torch.set_float32_matmul_precision("medium")
    with exact_fp32():
        assert torch.equal(x @ w, exact)


def test_an_inherited_setting_comes_back_inherited(caller_precision: None) -> None:
    """A caller's backend-wide setting reaches the operations through inheritance; after the
    guard they still follow the backend (diff review, session 41: they came back pinned to its
    old value, so a later backend-wide change missed them)."""
    mkldnn = torch.backends.mkldnn
    mkldnn.fp32_precision = "bf16"
    assert mkldnn.matmul.fp32_precision == "bf16"  # inherited
    with exact_fp32():
        assert mkldnn.matmul.fp32_precision == "ieee"
    assert mkldnn.matmul.fp32_precision == "bf16"
    mkldnn.fp32_precision = "ieee"  # the caller changes its mind: the operations follow
    assert {mkldnn.matmul.fp32_precision, mkldnn.conv.fp32_precision} == {"ieee"}

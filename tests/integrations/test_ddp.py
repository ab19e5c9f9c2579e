"""DistributedDataParallel: two CPU processes (torchrun, gloo) train a penalty mark (uchida), a
custom-step mark (tartaglione, at its default options), a trigger-set mark (adi, its triggers
sharded per rank), the activation marks (deepsigns, actsign) and the integrity mark written after
training (fragile) in one training: every rank ends with identical weights and reads the same
verdict, part by part, as the command line reads from the file rank 0 saves, and fragile is
intact. That is what DDP changes. That fit_ddp takes the steps of nnmark's own loop, bit for bit,
is test_one_process_ddp_gives_the_local_weights; that each mark is found at its default recipe,
the scheme tests' (tests/schemes, and tests/conftest.py's fixtures). So the two-rank run is
short (EPOCHS): it ran the library's 20 epochs at tartaglione R=1 to judge the marks here too
(52 s of a loaded suite; session 40)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from nnmark import TrainConfig
from nnmark.cli import app
from nnmark.integrations.ddp import SchemeHooks, shard_scheme
from nnmark.schemes import SCHEMES
from nnmark.schemes.base import Scheme

ROOT = Path(__file__).resolve().parents[2]


def torchrun(out: Path, *args: str) -> Path:
    """examples/ddp_embed.py in two gloo processes; its per-rank reports land in `out`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        str(ROOT / "examples" / "ddp_embed.py"),
        *args,
        *("--out", str(out)),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


#: The trigger set of the run: adi trains on its stored trigger set, which fit_ddp shards per
#: rank (content and noise stamp each batch's own images, so no set of theirs is sharded).
#: Before fit_ddp synchronised custom steps once per optimiser step, this run hung: tartaglione
#: skips a replica's backward pass on a rank whose replica loss is over its cap, and DDP's
#: per-backward all-reduce lost its pairing.
TRIGGER_SET = "adi"
#: The activation marks, and the integrity mark (fragile: written once training ended).
ACTIVATION_AND_INTEGRITY = "deepsigns+actsign+fragile"
SCHEMES_RUN = f"uchida+tartaglione+{TRIGGER_SET}+{ACTIVATION_AND_INTEGRITY}"
#: Two epochs: the ranks' agreement is compared after an epoch end (the schedule's step) and
#: into the next; how long the marks need is the scheme tests' question, not this one's.
EPOCHS = "2"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torchrun(tmp_path_factory.mktemp("ddp"), *("--scheme", SCHEMES_RUN, "--epochs", EPOCHS))


def reports(run: Path) -> list[dict[str, Any]]:
    return [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_activation_marks_and_the_integrity_mark_under_ddp(ddp_run: Path) -> None:
    for r in reports(ddp_run):
        assert set(r["parts"]) == set(SCHEMES_RUN.split("+"))
        assert r["parts"]["fragile"]["verdict"] == "intact"  # written once training ended


def test_two_ranks_train_identical_weights_and_read_the_same_verdict(ddp_run: Path) -> None:
    first, second = reports(ddp_run)
    assert [first["world_size"], second["world_size"]] == [2, 2]
    assert first["sha256"] == second["sha256"]
    assert {k: v for k, v in first.items() if k != "rank"} == {
        k: v for k, v in second.items() if k != "rank"
    }  # every part's verdict, BER and statistic, and the p-value


def test_the_ddp_model_file_verifies_through_the_cli(ddp_run: Path) -> None:
    """The file rank 0 saved, read by `nnmark verify`, gives the ranks' verdict part by part."""
    r = CliRunner().invoke(
        app,
        [
            *("verify", str(ddp_run / "marked.safetensors")),
            *("--key", str(ddp_run / "owner.nnkey"), "--json"),
        ],
    )
    assert r.exit_code in (0, 1) and "Traceback" not in r.output, r.output
    v = json.loads(r.stdout)
    rank0 = reports(ddp_run)[0]
    assert v["verdict"] == rank0["verdict"]
    assert {p["scheme"]: (p["verdict"], p["ber"]) for p in v["parts"]} == {
        name: (part["verdict"], part["ber"]) for name, part in rank0["parts"].items()
    }


def test_trigger_sets_are_sharded_like_the_data(digits) -> None:  # type: ignore[no-untyped-def]
    from nnmark import OwnerKey, new_model
    from nnmark.schemes.content import Content, ContentConfig

    key = OwnerKey.new("o", nonce="0e" * 16)
    config = ContentConfig(n=11, patterns=4)  # patterns (key groups) must not exceed n
    mark = Content.plan(new_model("cnn", digits, seed=0), key, config, data=digits)
    whole = Content(mark, [digits])
    shards = [shard_scheme(whole, r, 2) for r in (0, 1)]
    assert [len(s.x) for s in shards] == [6, 5]  # type: ignore[attr-defined]
    assert torch.equal(shards[0].x, whole.x[0::2])  # type: ignore[attr-defined]
    assert torch.equal(shards[1].y, whole.y[1::2])  # type: ignore[attr-defined]
    assert torch.equal(shards[1].groups, whole.groups[1::2])  # type: ignore[attr-defined]
    assert len(whole.x) == 11  # the original is untouched
    assert shard_scheme(whole, 0, 20) is whole  # fewer triggers than ranks: kept whole


def test_one_batch_at_a_time_mixing_keeps_the_scheme_generators(digits) -> None:  # type: ignore[no-untyped-def]
    from nnmark import OwnerKey, new_model
    from nnmark.schemes.content import Content, ContentConfig

    key = OwnerKey.new("o", nonce="0f" * 16)
    scheme = Content(
        Content.plan(new_model("cnn", digits, seed=0), key, ContentConfig(), data=digits),
        [digits],
    )
    batches = [(digits.x[i : i + 8], digits.y[i : i + 8]) for i in range(0, 32, 8)]
    expected = list(scheme.batches(iter(batches)))
    hooks = SchemeHooks([scheme])
    got = [hooks.mix(b) for b in batches]
    for (xe, ye), (xg, yg) in zip(expected, got, strict=True):
        assert torch.equal(xe, xg) and torch.equal(ye, yg)
    assert len(got[0][0]) == 8 + scheme.config.per_batch


def test_several_batches_of_one_come_back_as_one_batch(digits) -> None:  # type: ignore[no-untyped-def]
    """newlabel makes 1 + repeats training batches of each batch (extra steps on the same
    images); a framework that takes one step per batch gets them concatenated, in order, with
    the scheme's generators kept across calls."""
    from nnmark import OwnerKey, new_model
    from nnmark.schemes.newlabel import NewLabel, NewLabelConfig

    key = OwnerKey.new("o", nonce="10" * 16)
    config = NewLabelConfig()
    mark = NewLabel.plan(new_model("cnn", digits, seed=0), key, config, data=digits)
    scheme = NewLabel(mark, [digits])
    batches = [(digits.x[i : i + 8], digits.y[i : i + 8]) for i in range(0, 24, 8)]
    expected = list(scheme.batches(iter(batches)))
    per = 1 + config.repeats
    assert len(expected) == per * len(batches)
    hooks = SchemeHooks([scheme])
    for i, batch in enumerate(batches):
        x, y = hooks.mix(batch)
        parts = expected[per * i : per * (i + 1)]
        assert torch.equal(x, torch.cat([p[0] for p in parts]))
        assert torch.equal(y, torch.cat([p[1] for p in parts]))
        assert int((y == digits.num_classes).sum()) == per * config.per_batch  # key samples


def test_custom_step_schemes_are_found_from_the_registry() -> None:
    custom = {n for n in SCHEMES.names() if SCHEMES.get(n).step is not Scheme.step}
    assert "tartaglione" in custom and "uchida" not in custom


@pytest.mark.usefixtures("one_thread")  # 2 OpenMP threads on 2 loaded cores: 251 s, not 8
def test_one_process_ddp_gives_the_local_weights(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """fit_ddp is nnmark's one training loop with a DDP wrapper and a sharded sampler, not a
    copy: on one process it takes the steps `fit` takes, bit for bit, for a penalty mark, a
    custom-step mark and a trigger set together (and the BatchNorm recalibration both do).
    Two epochs: this compares two paths through the loop, it does not judge the marks."""
    import torch.distributed as dist

    from nnmark import OwnerKey, new_model
    from nnmark.api import resolve_schemes
    from nnmark.integrations.ddp import fit_ddp, state_hash
    from nnmark.train import fit

    config = TrainConfig(epochs=2, seed=3)
    key = OwnerKey.new("o", nonce="11" * 16)

    def bound() -> list[Scheme]:
        init = new_model("cnn", digits, seed=3)
        out = []
        for cls, cfg in resolve_schemes("uchida+tartaglione+adi", {"tartaglione": {"R": 1}}):
            mark = cls.plan(init, key, cfg, data=digits)
            out.append(cls(mark, [digits, *cls.config_data(cfg)]))
        return out

    local = fit(new_model("cnn", digits, seed=3), digits, bound(), config)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp = fit_ddp(new_model("cnn", digits, seed=3), digits, bound(), config)
    finally:
        dist.destroy_process_group()
    assert state_hash(ddp) == state_hash(local)

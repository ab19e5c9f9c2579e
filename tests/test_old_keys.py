"""Keys made by an earlier nnmark still bind and verify: a key is the owner's evidence for
years, and a scheme that gains an option must read a key from before it as what it was made
with (`Scheme.legacy_options`, `former_defaults`). Session 43's first version of actsign's
`margin_unit` refused every older actsign key as "not complete and canonical"; nothing tested
old keys then.

tests/data/keys_d9f8ea1/: one key per registered scheme, the composite `uchida+content` and a
BCH message, each made by `nnmark train` (2 epochs; segtrigger 1 on BBBC039's U-Net) at commit
d9f8ea1 (tests/data/keys_d9f8ea1/make.sh). Each is verified on a digits CNN that
never saw it: every derivation runs (triggers, projections, positions, masks, stored sets,
data hashes) and the verdict is a non-claim, not an error (segtrigger's on an untrained
U-Net); and each derives the same tensors and reads the same on models as initialised as at
d9f8ea1 (readings.json, readings.py), so a derivation that changed would be seen. tests/data/actsign_d9f8ea1.*: an
actsign key with the model it marked, found."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnmark import DataBundle, OwnerKey, load_data, load_model, new_model, verify
from nnmark.data import SHARED_DATA
from nnmark.schemes import SCHEMES
from nnmark.schemes.actsign import ActSign

DATA = Path(__file__).parent / "data"
KEYS = sorted((DATA / "keys_d9f8ea1").glob("*.nnkey"))


def test_every_scheme_has_an_old_key() -> None:
    named = {m.scheme for path in KEYS for m in OwnerKey.load(path).marks}
    assert named == set(SCHEMES.names()), (
        "a scheme registered after d9f8ea1 has no key from then: add a folder of keys made at a "
        "newer commit (make.sh, readings.py) and read it here too"
    )


@pytest.fixture(scope="module")
def seg() -> DataBundle:
    return load_data(f"seg:{SHARED_DATA / 'seg-bbbc039'}")


@pytest.mark.parametrize("path", KEYS, ids=[p.stem for p in KEYS])
def test_an_old_key_binds_and_claims_nothing_it_never_marked(
    path: Path, plain_cnn: torch.nn.Module, key_data: list[DataBundle], seg: DataBundle
) -> None:
    key = OwnerKey.load(path)
    # segtrigger marks a segmentation model: its key is read on an untrained U-Net
    suspect = new_model("unet", seg, seed=0) if path.stem == "segtrigger" else plain_cnn
    v = verify(suspect, key, data=[*key_data, seg])
    assert v.verdict not in ("found", "intact"), (path.stem, v.verdict, v.p_value)
    assert v.exit_code != 0


def test_an_old_actsign_key_is_read_with_the_margin_it_was_made_with() -> None:
    """`nnmark train --model mlp --scheme actsign --epochs 3` at d9f8ea1, before `margin_unit`:
    its key names no such field (and keeps its secrets, which come from the config as written);
    it verifies on the model it marked, read as the absolute margin it was embedded with."""
    key = OwnerKey.load(DATA / "actsign_d9f8ea1.nnkey")
    assert "margin_unit" not in key.marks[0].config
    model, _ = load_model(DATA / "actsign_d9f8ea1.safetensors")
    v = verify(model, key)
    assert v.verdict == "found" and v.ber == 0.0
    scheme = ActSign(key.marks[0])
    assert scheme.config.margin_unit == "absolute" and scheme.config.margin == 0.1


def test_old_keys_read_what_they_read_when_they_were_made() -> None:
    """Each key here derives the same tensors (a digest of each: trigger inputs and labels,
    projections, units, masks, dithers) and reads the same on the seed-0 digits CNN and BBBC039
    U-Net as initialised (BER, z-score; tartaglione's and watermas' positions enter their BER
    over 897 entries) as the nnmark that made it (readings.json, written by readings.py at
    d9f8ea1). A derivation that changed since would leave old keys bound but blind to the marks
    they made. Not covered: fragile's slots (its reading on another model is "modified" at any
    slots)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("readings", DATA / "keys_d9f8ea1/readings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    then = json.loads((DATA / "keys_d9f8ea1/readings.json").read_text())
    now = module.readings(SHARED_DATA)
    assert set(now) == set(then) == {p.stem for p in KEYS}
    for stem, parts in then.items():
        assert len(now[stem]) == len(parts), stem
        for a, b in zip(now[stem], parts, strict=True):
            for real in ("p_value", "z"):  # sums: to their last bits only
                if b[real] is None:
                    assert a[real] is None, (stem, real)
                else:
                    assert a[real] == pytest.approx(b[real], rel=1e-9, abs=0), (stem, real)
            assert {k: v for k, v in a.items() if k not in ("p_value", "z")} == {
                k: v for k, v in b.items() if k not in ("p_value", "z")
            }, stem

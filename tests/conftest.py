"""Shared fixtures: digits data and tiny models trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model, train
from nnmark.data.base import DataBundle

torch.set_num_threads(2)

EPOCHS = 20
#: Every key the tests create carries this creation time (it is committed and enters the KDF,
#: so a key made twice with one nonce is the same key only if its time is too).
CREATED = "2026-01-01T00:00:00+00:00"


#: Fixtures that cost nothing to build: a test using only these (and pytest's own) is in the
#: fast tier unless its folder or an explicit marker says otherwise. Any other fixture of the
#: suite trains or serves something.
LIGHT_FIXTURES = {
    "digits",
    "fashion",
    "key_data",
    "blackbox_options",
    "scheme_options",
    "fixed_key_time",
    "one_thread",
    "tsa",
    "stamp",
    "request",
    "tmp_path",
    "tmp_path_factory",
    "monkeypatch",
    "capsys",
    "capfd",
    "caplog",
    "record_property",
    "pytestconfig",
    "recwarn",
}
#: Folders whose tests are a tier of their own.
FOLDER_TIERS = {"integrations": "distributed", "remote": "server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Assign the tiers of pyproject.toml: `slow` for a test that needs a fixture outside
    LIGHT_FIXTURES, the folder's tier for integrations and remote tests."""
    for item in items:
        if set(getattr(item, "fixturenames", ())) - LIGHT_FIXTURES:
            item.add_marker(pytest.mark.slow)
        tier = FOLDER_TIERS.get(Path(str(item.fspath)).parent.name)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def fixed_key_time():  # type: ignore[no-untyped-def]
    """Keys made in tests are reproducible: OwnerKey.new's clock reads CREATED."""
    import nnmark.keys

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nnmark.keys, "_now", lambda: CREATED)
        yield


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return load_data("digits")


@pytest.fixture(scope="session")
def plain_cnn(digits: DataBundle) -> torch.nn.Module:
    """The digits CNN trained without a mark, seed 0."""
    return train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=EPOCHS, seed=0))


@pytest.fixture(scope="session")
def uchida_cnn(digits: DataBundle) -> tuple[torch.nn.Module, OwnerKey]:
    """The digits CNN trained with a 64-bit random-key Uchida mark, seed 0, same init as plain."""
    model = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("test owner", nonce="00" * 16)
    return embed(
        model, digits, "uchida", key=key, bits=64, config=TrainConfig(epochs=EPOCHS, seed=0)
    )


@pytest.fixture(scope="session")
def unmarked_cnns(digits: DataBundle) -> list[torch.nn.Module]:
    """Ten digits CNNs trained without any mark, seeds 100..109 (the same recipe)."""
    return [
        train(new_model("cnn", digits, seed=s), digits, TrainConfig(epochs=EPOCHS, seed=s))
        for s in range(100, 110)
    ]


FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


@pytest.fixture(scope="session")
def blackbox_options() -> dict[str, dict[str, str]]:
    """Options the black-box schemes need on digits (unrelated draws Fashion-MNIST items)."""
    return {"unrelated": {"source": f"fashion-mnist:{FASHION}"}}


@pytest.fixture(scope="session")
def fashion() -> DataBundle:
    """Fashion-MNIST: the source of `unrelated` triggers; keys name it by content hash, so
    verification needs it too."""
    return load_data(f"fashion-mnist:{FASHION}")


@pytest.fixture(scope="session")
def key_data(digits: DataBundle, fashion: DataBundle) -> list[DataBundle]:
    """Every data set the tests' keys re-derive inputs from: pass as verify(..., data=)."""
    return [digits, fashion]


@pytest.fixture(scope="session")
def tsa():  # type: ignore[no-untyped-def]
    """An RFC 3161 time-stamping authority on loopback (OpenSSL behind a small HTTP handler),
    as a user's would be a public one: keys whose evidence the holder chose (frontier) need a
    verified timestamp to be claimed."""
    from nnmark.testing.tsa import LoopbackTSA

    with LoopbackTSA() as authority:
        yield authority


@pytest.fixture(scope="session")
def stamp(tsa):  # type: ignore[no-untyped-def]
    """stamp(key) -> the key with a timestamp token from the loopback TSA; pass
    `tsa_certs=[tsa.ca_cert_pem]` to verify to have it counted."""
    import dataclasses

    from nnmark.provenance import fetch_timestamp

    def _stamp(key: OwnerKey) -> OwnerKey:
        return dataclasses.replace(key, timestamp=fetch_timestamp(key.commitment, tsa.url))

    return _stamp


@pytest.fixture(scope="session")
def blackbox_marked(
    digits: DataBundle, plain_cnn: torch.nn.Module, blackbox_options: dict[str, dict[str, str]]
) -> dict[str, tuple[torch.nn.Module, OwnerKey]]:
    """Every classification black-box scheme in the digits CNN (same init and seed as plain);
    schemes that stitch a trained model (frontier) are fine-tuned into `plain_cnn` instead.
    Keys as issued (frontier's still needs a calibration before it can be tested)."""
    from nnmark import SCHEMES
    from nnmark.schemes._trigger import black_box_schemes

    out = {}
    for name in black_box_schemes("classification"):
        key = OwnerKey.new(f"owner {name}", nonce=f"{len(name):032x}")
        stitch = SCHEMES.get(name).needs_trained
        out[name] = embed(
            plain_cnn if stitch else new_model("cnn", digits, seed=0),
            digits,
            name,
            options=blackbox_options.get(name),
            key=key,
            config=TrainConfig(epochs=EPOCHS, seed=0),
        )
    return out


SEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "seg-bbbc039"
#: The small segmentation recipe: 32 x 32 tiles, a width-8 U-Net, 20 epochs (seconds each).
SEG_RECIPE = TrainConfig(epochs=20, seed=0, lr=3e-3, batch_size=16)


@pytest.fixture(scope="session")
def seg32() -> DataBundle:
    """BBBC039 tiles (128 x 128) averaged down to 32 x 32, masks by majority; same splits."""
    import torch.nn.functional as F

    full = load_data(f"seg:{SEG}")
    x = F.avg_pool2d(full.x, 4)
    y = (F.avg_pool2d(full.y, 4) > 0.5).float()
    return DataBundle("seg32", "segmentation", x, y, full.splits, 1)


@pytest.fixture(scope="session")
def seg_models(seg32: DataBundle) -> tuple[torch.nn.Module, torch.nn.Module, OwnerKey]:
    """(plain, segtrigger-marked, key): width-8 U-Nets on seg32, same init and seed."""
    plain = train(new_model("unet", seg32, seed=0, width=8), seg32, SEG_RECIPE)
    key = OwnerKey.new("seg owner", nonce="5e" * 16)
    marked, key = embed(
        new_model("unet", seg32, seed=0, width=8), seg32, "segtrigger", key=key, config=SEG_RECIPE
    )
    return plain, marked, key

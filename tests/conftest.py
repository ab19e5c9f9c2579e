"""Shared fixtures: digits data and tiny models trained once per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from filelock import FileLock

from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model, train
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle

#: Under pytest-xdist (`make test` runs two workers on the two cores) each worker trains on one
#: intra-op thread: tiny models gain nothing from a second, contended one.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
T = TypeVar("T")

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
    "once",
    "worker_id",
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


def pytest_sessionstart(session: pytest.Session) -> None:
    """The real data sets live in one place (`nnmark.data.SHARED_DATA`, ../shared/data): without
    it the run stops here with one line, rather than skipping or failing test by test."""
    if not SHARED_DATA.is_dir():
        raise pytest.UsageError(
            f"the tests need the shared data folder {SHARED_DATA} (MNIST, Fashion-MNIST, BBBC039; "
            "its README names the files) beside the checkout"
        )
    if shutil.which("openssl") is None:  # the loopback TSA; a module skipped whole otherwise
        raise pytest.UsageError("the tests need openssl (the loopback timestamp authority)")


#: The files that take longest, longest first (per-file sums of a `make test` run, 2026-12-07,
#: heaviest first). `make test` hands xdist's workers whole files in collection order
#: (`--dist loadfile --no-loadscope-reorder`): the long files start first and the short ones
#: fill in at the end, where xdist's own order (most tests first) left a long file with few
#: tests (distillation) to run alone at the end. It orders the work; what runs is unchanged.
LONGEST_FIRST = [
    "schemes/test_scheme_realign.py",
    "schemes/test_scheme_distill.py",
    "remote/test_remote_oip.py",
    "integrations/test_onnx_export.py",
    "integrations/test_hf.py",
    "attacks/test_attacks_training.py",
    "schemes/test_scheme_ecc.py",
    "bench/test_bench_report.py",
    "integrations/test_lightning.py",
    "schemes/test_scheme_contract.py",
    "test_unforgeable.py",
    "test_foundation_uchida.py",
    "test_null_over_keys.py",
    "test_foundation_cli.py",
    "attacks/test_attacks_weights.py",
    "blackbox/test_blackbox_schemes.py",
    "blackbox/test_null_holds.py",
]


def _longest_first(item: pytest.Item) -> int:
    path = Path(str(item.fspath)).as_posix()
    for rank, name in enumerate(LONGEST_FIRST):
        if path.endswith("/tests/" + name):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Assign the tiers of pyproject.toml: `slow` for a test that needs a fixture outside
    LIGHT_FIXTURES, the folder's tier for integrations and remote tests; put the longest files
    first (LONGEST_FIRST; a stable sort: each file's tests keep their order)."""
    items.sort(key=_longest_first)
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
def once(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Callable[..., Any]:
    """once(name, build) -> build(), computed once per test run. Under pytest-xdist the first
    worker to ask builds it and saves it (torch.save: the suite's own objects) in the run's
    shared temporary folder; the others wait on a lock and load that copy, so a model is
    trained once however many workers use it."""
    if worker_id == "master":
        return lambda name, build: build()
    root = tmp_path_factory.getbasetemp().parent / "built-once"
    root.mkdir(exist_ok=True)

    def get(name: str, build: Callable[[], T]) -> T:
        path = root / f"{name}.pt"
        with FileLock(f"{path}.lock"):
            if path.is_file():
                return torch.load(path, weights_only=False)  # type: ignore[no-any-return]
            value = build()
            torch.save(value, f"{path}.part")
            os.replace(f"{path}.part", path)
            return value

    return get


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return load_data("digits")


@pytest.fixture(scope="session")
def plain_cnn(digits: DataBundle, once: Callable[..., Any]) -> torch.nn.Module:
    """The digits CNN trained without a mark, seed 0."""
    return once(  # type: ignore[no-any-return]
        "plain_cnn",
        lambda: train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=EPOCHS, seed=0)),
    )


@pytest.fixture(scope="session")
def uchida_cnn(digits: DataBundle, once: Callable[..., Any]) -> tuple[torch.nn.Module, OwnerKey]:
    """The digits CNN trained with a 64-bit random-key Uchida mark, seed 0, same init as plain."""

    def build() -> tuple[torch.nn.Module, OwnerKey]:
        model = new_model("cnn", digits, seed=0)
        key = OwnerKey.new("test owner", nonce="00" * 16)
        config = TrainConfig(epochs=EPOCHS, seed=0)
        return embed(model, digits, "uchida", key=key, bits=64, config=config)

    return once("uchida_cnn", build)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def unmarked_cnns(digits: DataBundle, once: Callable[..., Any]) -> list[torch.nn.Module]:
    """Ten digits CNNs trained without any mark, seeds 100..109 (the same recipe)."""
    return [
        once(
            f"unmarked_cnn_{s}",
            lambda s=s: train(
                new_model("cnn", digits, seed=s), digits, TrainConfig(epochs=EPOCHS, seed=s)
            ),
        )
        for s in range(100, 110)
    ]


@pytest.fixture(scope="session")
def never_marked(
    digits: DataBundle, unmarked_cnns: list[torch.nn.Module], once: Callable[..., Any]
) -> dict[str, list[torch.nn.Module]]:
    """Never-marked models per architecture, two recipes each: CNNs (two of unmarked_cnns, Adam;
    one SGD with momentum) and MLPs (Adam, SGD). What the null tests judge keys against."""
    sgd = TrainConfig(epochs=15, seed=301, optimizer="sgd", lr=0.05)
    adam = TrainConfig(epochs=10, seed=300)

    def make(arch: str, config: TrainConfig) -> torch.nn.Module:
        build = lambda: train(new_model(arch, digits, seed=config.seed), digits, config)  # noqa: E731
        return once(f"never_marked_{arch}_{config.optimizer}", build)  # type: ignore[no-any-return]

    mlps = [make("mlp", c) for c in (adam, sgd)]
    return {"cnn": [*unmarked_cnns[:2], make("cnn", sgd)], "mlp": mlps}


FASHION = SHARED_DATA / "fashion-mnist"


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
        stamp = fetch_timestamp(key.commitment, tsa.url, signature=key.signature)
        return dataclasses.replace(key, timestamp=stamp)

    return _stamp


class BlackboxMarked(Mapping[str, tuple[torch.nn.Module, OwnerKey]]):
    """Every classification black-box scheme embedded in the digits CNN, each trained the first
    time a test asks for it (so two workers can train two schemes at once)."""

    def __init__(self, build: Callable[[str], tuple[torch.nn.Module, OwnerKey]]) -> None:
        from nnmark.schemes._trigger import black_box_schemes

        self._names = black_box_schemes("classification")
        self._build = build

    def __getitem__(self, name: str) -> tuple[torch.nn.Module, OwnerKey]:
        if name not in self._names:
            raise KeyError(name)
        return self._build(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@pytest.fixture(scope="session")
def blackbox_marked(
    digits: DataBundle,
    plain_cnn: torch.nn.Module,
    blackbox_options: dict[str, dict[str, str]],
    once: Callable[..., Any],
) -> BlackboxMarked:
    """Every classification black-box scheme in the digits CNN (same init and seed as plain);
    schemes that stitch a trained model (frontier) are fine-tuned into `plain_cnn` instead.
    Keys as issued (`stamp` adds a timestamp: it proves priority and waives no search cost)."""
    from nnmark import SCHEMES

    built: dict[str, tuple[torch.nn.Module, OwnerKey]] = {}

    def build(name: str) -> tuple[torch.nn.Module, OwnerKey]:
        key = OwnerKey.new(f"owner {name}", nonce=f"{len(name):032x}")
        stitch = SCHEMES.get(name).needs_trained
        return embed(
            plain_cnn if stitch else new_model("cnn", digits, seed=0),
            digits,
            name,
            options=blackbox_options.get(name),
            key=key,
            config=TrainConfig(epochs=EPOCHS, seed=0),
        )

    def get(name: str) -> tuple[torch.nn.Module, OwnerKey]:
        if name not in built:
            built[name] = once(f"blackbox_{name}", lambda: build(name))
        return built[name]

    return BlackboxMarked(get)


SEG = SHARED_DATA / "seg-bbbc039"
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
def seg_models(
    seg32: DataBundle, once: Callable[..., Any]
) -> tuple[torch.nn.Module, torch.nn.Module, OwnerKey]:
    """(plain, segtrigger-marked, key): width-8 U-Nets on seg32, same init and seed."""

    def build() -> tuple[torch.nn.Module, torch.nn.Module, OwnerKey]:
        plain = train(new_model("unet", seg32, seed=0, width=8), seg32, SEG_RECIPE)
        key = OwnerKey.new("seg owner", nonce="5e" * 16)
        marked, key = embed(
            new_model("unet", seg32, seed=0, width=8),
            seg32,
            "segtrigger",
            key=key,
            config=SEG_RECIPE,
        )
        return plain, marked, key

    return once("seg_models", build)  # type: ignore[no-any-return]


# --- shared by tests/schemes/test_scheme_realign.py (session 40) ---
@pytest.fixture(scope="session")
def uchida_finetuned(
    digits: DataBundle, plain_cnn: torch.nn.Module, once: Callable[..., Any]
) -> tuple[torch.nn.Module, OwnerKey]:
    """Uchida fine-tuned into `plain_cnn` as `nnmark embed` does it: the default recipe
    (`default_recipe("uchida", finetune=True)`), default bits, the key committed to
    `plain_cnn` (the unmarked reference `verify --reference-unmarked` accepts). The key is
    tests/schemes' `owner_key("uchida")`, so that folder's realign tests use this very model;
    others that fine-tune Uchida into plain_cnn can reuse it instead of training their own."""
    import copy

    from nnmark.api import default_recipe

    def build() -> tuple[torch.nn.Module, OwnerKey]:
        return embed(
            copy.deepcopy(plain_cnn),
            digits,
            "uchida",
            key=OwnerKey.new("uchida owner", nonce="a5" * 16),
            config=default_recipe("uchida", finetune=True),
            reference=plain_cnn,
        )

    return once("uchida_finetuned", build)  # type: ignore[no-any-return]

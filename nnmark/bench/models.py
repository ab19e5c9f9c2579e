"""The models phase of a sweep: train each model the grid needs once (or find it in the cache),
and stamp the keys with a time-stamping authority, as an owner would at creation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnmark.bench.grid import Task
from nnmark.bench.jobs import BENCH_CREATED, ModelJob, split_bits
from nnmark.bench.store import ResultStore
from nnmark.errors import NNMarkError

__all__ = ["Notary", "stamp_keys", "train_model_timed"]


def _train_config(task: Task, seed: int, epochs: int | None = None) -> Any:
    from nnmark.train import TrainConfig

    return TrainConfig(
        epochs=task.epochs if epochs is None else epochs,
        seed=seed,
        fraction=task.fraction,
        batch_size=task.batch_size,
        lr=task.lr,
        optimizer=task.optimizer,
        momentum=task.momentum,
        weight_decay=task.weight_decay,
    )


def train_model_timed(root: Path, job: ModelJob, device: str = "cpu") -> tuple[str, bool, float]:
    """(cache id, whether it was trained now, CPU seconds this call took in its process)."""
    cpu0 = time.process_time()
    trained = _train(root, job, device)
    return job.ident, trained, round(time.process_time() - cpu0, 3)


def _train(root: Path, job: ModelJob, device: str = "cpu") -> bool:
    """Train `job`'s model (and key) into the cache unless it is there, on `device`; True if
    trained now. The cache name does not depend on the device (nnmark.device: a run's device is
    not part of its recipe)."""
    import torch

    from nnmark.api import embed, new_model, train
    from nnmark.data import load_data
    from nnmark.keys import OwnerKey

    torch.set_num_threads(1)
    cache = ResultStore(root).cache
    if cache.has(job.ident, keyed=job.scheme != "none"):
        return False
    data = load_data(job.task.data)
    if fine_tuned(job.scheme):  # the scheme's paper marks a trained model: the task's plain one
        plain = ModelJob(job.task, "none", job.seed, {}, job.epochs)
        _train(root, plain, device)
        init = cache.load(plain.ident)[0]
    else:
        init = new_model(job.task.arch, data, seed=job.seed)
    cfg = _train_config(job.task, job.seed, job.epochs)
    key = None
    if job.scheme == "none":
        model = train(init, data, cfg, device=device)
    else:
        # A fixed nonce per model: the key (and so every cell) is reproducible from the grid.
        key = OwnerKey.new("nnmark bench", nonce=job.nonce, created=BENCH_CREATED)
        options, bits = split_bits(job.scheme, job.options)
        model, key = embed(
            init,
            data,
            job.scheme,
            options=options or None,
            key=key,
            bits=bits,
            config=cfg,
            device=device,
        )
    cache.put(job.ident, model, data, key)
    return True


def fine_tuned(scheme: str) -> bool:
    """Whether the bench marks `scheme` ('a+b': any part) into the trained plain model of the
    task (the scheme's `situation` is "finetune": nnmark.api.scheme_situation, which
    `nnmark embed --distill` follows too) rather than training it from scratch."""
    from nnmark.api import scheme_situation

    parts = [p for p in scheme.split("+") if p != "none"]
    return bool(parts) and scheme_situation("+".join(parts)) == "finetune"


@dataclass(frozen=True)
class Notary:
    """A time-stamping authority the bench stamps its keys with, as an owner would at creation
    (`nnmark key timestamp`), so verdicts carry the priority their owner's would (a stamp waives
    no search cost). `ca_pem`: the certificate verification trusts."""

    url: str
    ca_pem: bytes


def stamp_keys(store: ResultStore, jobs: Sequence[ModelJob], notary: Notary) -> int:
    """Give every cached key of `jobs` a timestamp `notary` vouches for (an older token under
    another authority is replaced); returns how many were stamped."""
    from nnmark.keys import OwnerKey
    from nnmark.provenance import check_timestamp, fetch_timestamp

    stamped = 0
    for job in jobs:
        path = store.cache.key_path(job.ident)
        if job.scheme == "none" or not path.exists():
            continue
        key = OwnerKey.load(path)
        if key.timestamp is not None:
            try:
                check_timestamp(
                    key.commitment, key.timestamp, [notary.ca_pem], signature=key.signature
                )
                continue
            except NNMarkError:
                pass
        stamp = fetch_timestamp(key.commitment, notary.url, signature=key.signature)
        key = dataclasses.replace(key, timestamp=stamp)
        key.save(path)
        stamped += 1
    return stamped

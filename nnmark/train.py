"""The training loop and the five points where schemes plug in.

The loop calls, per scheme: `prepare` once, `batches` to wrap each epoch's batches, `penalty`
inside the loss, `step` (at most one scheme may replace the plain step), and `finalize` once at
the end. A user's own loop calls the same hooks::

    model = scheme.prepare(model)
    for x, y in scheme.batches(loader):
        loss = criterion(model(x), y) + scheme.penalty(model, (x, y))
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    model = scheme.finalize(model)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, TensorDataset

from nnmark.config import MAX_EPOCHS, check
from nnmark.data.base import DataBundle, check_split
from nnmark.device import device_of, resolve_device, seeded
from nnmark.errors import NNMarkError
from nnmark.hooks import Batch, Hooks, LossFn, has_custom_step, plain_step
from nnmark.layers import training_norms
from nnmark.tasks import Task, check_fits, get_task

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]
H = TypeVar("H", bound=Hooks)
StepFn = Callable[[nn.Module, Batch, LossFn, torch.optim.Optimizer], float]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `seed` fixes initial weights, batch order and scheme randomness."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["cosine", "constant"] = "cosine"
    momentum: float = 0.9
    #: Nesterov momentum (SGD only; Uchida et al.'s recipe uses it)
    nesterov: bool = False
    weight_decay: float = 0.0
    seed: int = 0
    split: str = "train"
    fraction: float = 1.0
    temperature: float = 1.0  # distillation only
    #: recompute BatchNorm running statistics at the final weights (see recalibrate_batchnorm)
    recalibrate_bn: bool = True

    def __post_init__(self) -> None:
        # bounded as demo and calibrate bound theirs: `train --epochs 10**12` ran until killed
        check(
            0 <= self.epochs <= MAX_EPOCHS,
            f"epochs must be in [0, {MAX_EPOCHS}], got {self.epochs}",
        )
        # at most float32's largest: 1e300 passed and became a RuntimeError in the optimiser
        check(0 < self.lr <= 3.4e38, f"lr must be > 0 and a float32, got {self.lr}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check_split(self.split)
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(
            not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
            "nesterov needs optimizer sgd with momentum > 0",
        )


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


#: Mixed precision: the autocast dtype of each `amp` choice.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
Precision = Literal["bf16", "fp16"]


def native_half_precision(amp: Precision, device: torch.device) -> bool:
    """Whether `device` has fast kernels for `amp`: a GPU is taken to (pre-Ampere GPUs emulate
    bf16); a CPU only where oneDNN says so (its bf16 kernels need AVX-512, its fp16 kernels
    AVX-512 FP16 or AMX). Without them PyTorch runs half precision convolutions through its
    reference kernels, many times slower than fp32 (benchmarks/engine_overhead.py, its
    mixed-precision rows, with the machine's features)."""
    if device.type != "cpu":
        return True
    try:
        mkldnn = torch.ops.mkldnn
        check = {
            "bf16": mkldnn._is_mkldnn_bf16_supported,
            "fp16": mkldnn._is_mkldnn_fp16_supported,
        }[amp]
        return bool(check())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN: reference kernels
        return False


def make_loss(
    task: Task,
    schemes: Sequence[Hooks],
    teacher: nn.Module | None,
    temperature: float,
    *,
    amp: Precision | None = None,
    device_type: str = "cpu",
) -> LossFn:
    """Task loss (or distillation loss against `teacher`) plus every scheme's penalty.

    With `amp`, the forward passes and the task loss run under autocast in that precision; the
    schemes' penalties always run in fp32, outside autocast: a projection sums hundreds of
    weights into each bit's logit and a hinge compares activations with a small margin, where
    half precision's 8 (bf16) or 11 (fp16) bits of mantissa would decide bits by rounding.
    """

    def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        with torch.autocast(device_type, AMP_DTYPES[amp or "bf16"], enabled=amp is not None):
            out = model(x)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(x)
                loss = task.distill_loss(out, target, temperature, y)
            else:
                loss = task.loss(out, y)
        if amp is not None:
            loss = loss.float()
        for s in schemes:
            loss = loss + s.penalty(model, batch)
        return loss

    return loss_fn


def _unlabelled(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Distillation reads no data label: every label (a class, a mask's every pixel) is -1
    here, so the only labels that reach the loss are those a key gave the rows it mixes in
    (`Task.distill_loss`)."""
    for x, y in batches:
        yield x, torch.full_like(y, -1)


def scaled_step(scaler: torch.amp.GradScaler) -> StepFn:
    """The plain step with fp16's loss scaling (small gradients would underflow to zero)."""

    def step(
        model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
    ) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    return step


def pick_step(schemes: Sequence[Hooks]) -> StepFn:
    custom = [s for s in schemes if has_custom_step(s)]
    if len(custom) > 1:
        names = ", ".join(getattr(s, "name", type(s).__name__) for s in custom)
        raise NNMarkError(f"schemes {names} each replace the training step; combine at most one")
    return custom[0].step if custom else plain_step


@dataclass(frozen=True)
class Shard:
    """This process's share of a distributed run: rank `rank` of `world` processes.

    `wrap` makes the module that trains (DistributedDataParallel) from the prepared one;
    `average` averages a tensor over the ranks in place (an all-reduce), used for the gradients
    of a custom step and for the BatchNorm statistics. nnmark.integrations.ddp fills it.
    """

    rank: int = 0
    world: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None
    average: Callable[[torch.Tensor], None] | None = None


class ShardSampler(Sampler[int]):
    """The single-process shuffled order (a RandomSampler on the seeded generator), padded by
    wrapping to a multiple of the world and dealt out rank r, r + W, r + 2W, ... (as
    DistributedSampler deals). Every rank draws the same order from the same seed; with one
    process it is exactly the local order, so the distributed path reproduces the local one."""

    def __init__(self, n: int, generator: torch.Generator, rank: int, world: int) -> None:
        self.inner = RandomSampler(range(n), generator=generator)
        self.n, self.rank, self.world = n, rank, world

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)
        order += order[: len(self) * self.world - len(order)]
        yield from order[self.rank :: self.world]


class BatchTensors(TensorDataset):
    """A TensorDataset that hands a whole batch over in one indexing operation (the DataLoader
    calls `__getitems__` when a dataset has it): the same values as stacking one sample at a
    time, without 2 x batch-size small copies per step."""

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return [t[idx] for t in self.tensors]


def _as_batch(items: list[torch.Tensor]) -> Batch:
    x, y = items
    return x, y


def make_loader(
    data: DataBundle,
    config: TrainConfig,
    *,
    shard: Shard = Shard(),
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The training batches of `config.split`: shuffled from `config.seed`, this rank's shard."""
    x, y = data.tensors(config.split, config.fraction)
    gen = torch.Generator().manual_seed(config.seed)
    sampler = (
        RandomSampler(range(len(x)), generator=gen)
        if shard.world == 1
        else ShardSampler(len(x), gen, shard.rank, shard.world)
    )
    return DataLoader(
        BatchTensors(x, y),
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=_as_batch,
        generator=gen,  # as DataLoader(shuffle=True, generator=gen): worker seeds drawn from it
        num_workers=workers,
        pin_memory=pin_memory,
        # not persistent: each epoch's iterator draws its worker seed from `gen`, as the
        # single-process one does, so workers change nothing but speed
        persistent_workers=False,
    )


def to_device(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    if x.device == device and y.device == device:
        return batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def run_epochs(
    model: nn.Module,
    epoch_batches: Callable[[], Iterable[Batch]],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    step: StepFn = plain_step,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    patience: int = 0,
    context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    progress: ProgressFn | None = None,
) -> nn.Module:
    """The one training loop: owners, thieves, calibration and DDP all run it.

    Each epoch trains on `epoch_batches()` (moved to the model's device) with `step`, then steps
    the schedule. With `validate` (a held-out score, lower is better) training stops once it has
    not improved for `patience` epochs and the weights of the best epoch are restored.
    `context` wraps each step (DDP's no_sync for a custom step).
    """
    device = device_of(model)
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    stale = 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in epoch_batches():
            batch = to_device(batch, device)
            with context() if context is not None else contextlib.nullcontext():
                total += step(model, batch, loss_fn, optimizer)
            count += 1
        if scheduler is not None:
            scheduler.step()
        mean = total / max(count, 1)
        log.debug("epoch %d/%d loss %.4f", epoch + 1, epochs, mean)
        if progress is not None:
            progress(epoch + 1, epochs, mean)
        if validate is None:
            continue
        score = validate(model)
        if best is None or score < best[0]:
            best, stale = (score, copy.deepcopy(model.state_dict())), 0
        else:
            stale += 1
            if patience and stale >= patience:
                break
    if best is not None:
        model.load_state_dict(best[1])
    return model


def fit(
    model: nn.Module,
    data: DataBundle,
    schemes: Sequence[Hooks] = (),
    config: TrainConfig | None = None,
    *,
    task: Task | str | None = None,
    teacher: nn.Module | None = None,
    progress: ProgressFn | None = None,
    device: torch.device | str | None = None,
    workers: int = 0,
    amp: Precision | None = None,
    shard: Shard = Shard(),
) -> nn.Module:
    """Train `model` in place on `data` with the schemes' hooks and return it (in eval mode).

    With `teacher`, no label is read: the loss is the distillation loss to the teacher's outputs
    (distill-to-embed, and the thief's extraction attacks). It runs on `device` (default: where
    the model is; "auto" picks a GPU when present); `workers` DataLoader processes feed it;
    `amp` ("bf16" / "fp16") runs the forward passes in mixed precision (make_loss).
    Under `shard` (nnmark.integrations.ddp.fit_ddp) it trains this rank's shard of the data and
    of every trigger set through the wrapped (DDP) module: the same loop, not a copy.
    """
    config = config or TrainConfig()
    task = get_task(task or data.task) if not isinstance(task, Task) else task
    where = device_of(model) if device is None else resolve_device(device)
    first = data.indices(config.split)[:2]  # an unknown split: one line naming it
    check_fits(model, data.x[first], data.y[first], task, data.num_classes)
    if amp is not None and amp not in AMP_DTYPES:
        raise NNMarkError(f"amp must be bf16 or fp16, got {amp!r}")
    if shard.world > 1:
        schemes = [shard_scheme(s, shard.rank, shard.world) for s in schemes]
    step = pick_step(schemes)
    has_custom = step is not plain_step
    if amp == "fp16":
        if has_custom:
            raise NNMarkError(
                "fp16 needs loss scaling, which a scheme's own training step does not do: "
                "use amp bf16 with it"
            )
        step = scaled_step(torch.amp.GradScaler(where.type))
    if amp is not None and not native_half_precision(amp, where):
        log.warning(
            "amp %s: this CPU has no native %s kernels, so training runs slower than in fp32, "
            "not faster (train without amp here; it pays on a GPU or a CPU whose oneDNN has them)",
            amp,
            amp,
        )
    with seeded(config.seed, where):
        for s in schemes:
            model = s.prepare(model)
        model = model.to(where)
        if teacher is not None:
            teacher = teacher.to(where).eval()
        trained = shard.wrap(model) if shard.wrap is not None else model
        optimizer = make_optimizer(trained.parameters(), config)
        loss_fn = make_loss(
            task, schemes, teacher, config.temperature, amp=amp, device_type=where.type
        )
        context = None
        if has_custom and shard.world > 1:
            # a custom step may run a rank-dependent number of backward passes: its gradients are
            # averaged once before the optimiser step, outside DDP's per-backward all-reduce
            sync_gradients_before_step(optimizer, shard)
            context = trained.no_sync
        # Cosine decay to zero: the last epochs settle instead of jumping, so the final model's
        # accuracy depends less on where the last step happened to land.
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
            if config.schedule == "cosine"
            else None
        )
        loader = make_loader(
            data, config, shard=shard, workers=workers, pin_memory=where.type == "cuda"
        )

        def epoch_batches() -> Iterator[Batch]:
            batches = _unlabelled(iter(loader)) if teacher is not None else iter(loader)
            for s in schemes:
                batches = s.batches(batches)
            return batches

        run_epochs(
            trained,
            epoch_batches,
            loss_fn,
            optimizer,
            config.epochs,
            step=step,
            scheduler=scheduler,
            context=context,
            progress=progress,
        )
        if config.recalibrate_bn and config.epochs > 0:
            # over the batches training saw (trigger inputs mixed in): the statistics the weights
            # were fitted under
            recalibrate_batchnorm(model, (to_device(b, where) for b in epoch_batches()))
            if shard.average is not None:
                for buf in batchnorm_statistics(model):
                    shard.average(buf)
        for s in schemes:  # after the recalibration: the fragile mark hashes the final buffers
            model = s.finalize(model)
    model.eval()
    return model


def shard_scheme(scheme: H, rank: int, world_size: int) -> H:
    """A copy of a trigger-set scheme keeping this rank's share of the triggers.

    Schemes without a trigger set are returned as they are (TriggerScheme.shard); a set smaller
    than the world is kept whole on every rank rather than leaving a rank without triggers.
    """
    split = getattr(scheme, "shard", None)
    return cast(H, split(rank, world_size)) if callable(split) else scheme


def sync_gradients_before_step(optimizer: torch.optim.Optimizer, shard: Shard) -> None:
    """Average every parameter's gradient over the ranks just before each `optimizer.step()`.

    For a custom step run under DDP's ``no_sync``: two collectives per step whatever the step
    did before (how many backward passes, which parameters got a gradient), so the ranks stay
    paired. A parameter keeps no gradient only when no rank gave it one (Adam would move a
    parameter with a zero gradient through its momentum).
    """
    average = shard.average
    if average is None:
        raise NNMarkError("internal: a distributed custom step needs Shard.average")

    def hook(opt: torch.optim.Optimizer, *_: Any) -> None:
        params = [p for group in opt.param_groups for p in group["params"]]
        if not params:
            return
        device = params[0].device
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        average(has)  # > 0 where any rank has a gradient
        flat = torch.cat(
            [
                (p.grad.detach() if p.grad is not None else torch.zeros_like(p))
                .reshape(-1)
                .to(device, torch.float32)
                for p in params
            ]
        )
        average(flat)
        offset = 0
        for p, present in zip(params, has.tolist(), strict=True):
            size = p.numel()
            if present:
                value = flat[offset : offset + size].view(p.shape)
                if p.grad is None:
                    p.grad = value.to(p.device, p.dtype)
                else:
                    p.grad.copy_(value)
            offset += size

    optimizer.register_step_pre_hook(hook)


def batchnorm_statistics(model: nn.Module) -> list[torch.Tensor]:
    """The running means and variances of a model's BatchNorm layers (averaged over ranks)."""
    return [
        t
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable[Batch]) -> None:
    """Set the running statistics of every BatchNorm layer in training mode to the plain average
    over one pass of `loader` at the final weights (as torch.optim.swa_utils.update_bn).

    Why: the running statistics are an exponential average (momentum 0.1) over the last steps'
    *moving* weights. After a short training they lag the final model: the seeds preset's U-Net
    on BBBC039 (5 epochs, 50 steps) had test Dice 0.62-0.74 with them and 0.91-0.94 after this
    pass, and Tartaglione's replica term, which moves the weights fast, 0.05 -> 0.80. Layers in
    eval mode (a frozen backbone) keep their statistics; no weight changes.
    """
    norms = training_norms(model)
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    for x, _ in loader:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum

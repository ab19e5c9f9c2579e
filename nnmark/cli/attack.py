"""`nnmark attack`: run a removal attack (or a chain) on a model file, as a thief would."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nnmark.cli.common import (
    DeviceOpt,
    ForceOpt,
    MaxParamsOpt,
    SetOption,
    check_finite,
    check_inputs,
    check_model_output,
    command,
    distinct_paths,
    err,
    out,
    parse_options,
    pick_device,
)
from nnmark.config import MAX_SEED
from nnmark.errors import NNMarkError

if TYPE_CHECKING:
    from torch import nn


def reshaped_layers(before: nn.Module, after: nn.Module) -> dict[str, list[int]]:
    """Tensors whose shape an attack changed (widening, channel pruning), with new shapes."""
    old = before.state_dict()
    return {
        k: list(v.shape)
        for k, v in after.state_dict().items()
        if k in old and tuple(old[k].shape) != tuple(v.shape)
    }


def attack_table() -> Table:
    from nnmark.attacks import ATTACKS
    from nnmark.config import describe_config

    table = Table(title="registered attacks (options: --set key=value)")
    for col in ("attack", "needs data", "options (default)", "what it does"):
        table.add_column(col)
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        opts = ", ".join(f"{n}={d}" for n, _, d in describe_config(cls.Config)) or "-"
        table.add_row(name, "yes" if cls.needs_data else "no", opts, cls.summary)
    return table


@command("attack")
def attack_cmd(
    name: Annotated[
        str | None, typer.Argument(help="Attack name, or a chain: prune:fraction=0.5,finetune")
    ] = None,
    model_path: Annotated[Path | None, typer.Argument(help="Model file to attack")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Attacked model file")] = None,
    force: ForceOpt = False,
    data: Annotated[
        str | None, typer.Option("--data", help="NAME[:PATH]: the thief's data and the test split")
    ] = None,
    sets: Annotated[list[str] | None, SetOption] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Attack seed")] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List attacks and their options")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print fidelity as JSON")] = False,
    max_params: MaxParamsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Attack a model the way a thief would; with --data, prints fidelity before and after."""
    if list_:
        out.print(attack_table())
        return
    if name is None or model_path is None or out_path is None:
        raise NNMarkError("usage: nnmark attack NAME MODEL --out OUT (or --list)")
    from nnmark.api import attack
    from nnmark.attacks import build_attack
    from nnmark.attacks.base import findings
    from nnmark.data import load_data
    from nnmark.io import load_model, save_model
    from nnmark.tasks import evaluate

    built = build_attack(name, parse_options(sets))  # validates before any loading
    dev = pick_device(device)
    check_model_output(out_path, force=force)
    distinct_paths({"--out": out_path}, {"MODEL": model_path})
    model, info = load_model(model_path, max_params=max_params)
    bundle = load_data(data) if data else None
    if bundle is not None:
        check_inputs(info, bundle, str(data))
    epochs = getattr(getattr(built, "config", None), "epochs", None)
    what = f", {epochs} epochs of training" if isinstance(epochs, int) and epochs else ""
    with err.status(f"attack {name} running{what}"):
        attacked = attack(model, name, bundle, options=parse_options(sets), seed=seed, device=dev)
    check_finite(
        attacked,
        f"the attacked model ({name})",
        "check the model file is finite, or weaken the attack's options",
    )
    extra = dict(info.extra)
    extra["attack"] = repr(built)
    extra["attack_seed"] = str(seed)
    extra.pop("attack_findings", None)  # an earlier attack's, on the input file
    found = findings(attacked)
    if found:  # e.g. Neural Cleanse's flagged class
        extra["attack_findings"] = json.dumps(found, sort_keys=True)
    changed = reshaped_layers(model, attacked)
    if changed:
        # The zoo cannot rebuild these widths from arch_kwargs; the tensors carry them, and
        # `verify` reads tensors by name (`verify --reference` rebuilds and realigns them).
        extra["reshaped"] = json.dumps(changed)
        logging.getLogger(__name__).warning(
            "%s changes layer shapes (%s): the file does not reload through the zoo; "
            "verify it with --reference-unmarked (the unmarked model the key commits to: "
            "nnmark embed, or train --reference-unmarked)",
            built.name or name,
            ", ".join(sorted(changed)[:3]) + ("..." if len(changed) > 3 else ""),
        )
    result: dict[str, object] = {"attack": repr(built), "out": str(out_path)}
    if found:
        result["findings"] = found
    if bundle is not None:  # before saving: a failure here leaves --out as it was (review)
        test = bundle.loader("test", 256)
        try:
            result["before"] = evaluate(model, test, info.task)
            result["after"] = evaluate(attacked, test, info.task)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NNMarkError(
                f"--data {data}: the model does not evaluate on it ({first})"
            ) from None
    save_model(attacked, dataclasses.replace(info, extra=extra), out_path)
    if as_json:
        print(json.dumps(result))
        return
    out.print(f"{built.describe()}: saved {out_path}")
    for k, v in found.items():
        out.print(f"  {k.replace('_', ' ')}: {'none' if v is None else v}", markup=False)
    if bundle is not None:
        for when in ("before", "after"):
            metrics = result[when]
            assert isinstance(metrics, dict)
            out.print(
                f"  test {when}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            )


@command("forge")
def forge_cmd(
    model_path: Annotated[
        Path, typer.Argument(help="A model the forger holds (never marked by them)")
    ],
    data: Annotated[str, typer.Option("--data", help="The task's data (NAME[:PATH])")] = "digits",
    scheme: Annotated[
        list[str] | None, typer.Option("--scheme", help="Schemes to forge (repeatable; all)")
    ] = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            help="Strategies (repeatable; all): honest, chosen_payload, tampered, "
            "fabricated_triggers, identity_edit, nonce_search, split_search",
        ),
    ] = None,
    budget: Annotated[float, typer.Option(help="Seconds of nonce search per scheme")] = 2.0,
    victim_key: Annotated[
        Path | None, typer.Option("--victim-key", help="Someone else's key for this model")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every attempt as JSON")] = False,
    max_params: MaxParamsOpt = None,
) -> None:
    """Try to forge a key that claims a model never marked with it (the forger's toolbox).

    nnmark.forge: fabricated triggers, chosen payloads, tampered fields, identity edits and a
    timed nonce search against every scheme. Exit 0 when no forged key was accepted, 1 when one
    was (a hole in verification)."""
    import functools

    from nnmark.data import load_data
    from nnmark.forge import STRATEGIES, Strategy, Target, forge, nonce_search
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey

    unknown = sorted(set(strategy or []) - set(STRATEGIES))
    if unknown:
        raise NNMarkError(f"unknown strategy {unknown[0]!r} (known: {', '.join(STRATEGIES)})")
    if not 0 < budget <= 3600:  # nan too
        raise NNMarkError(f"--budget must be in (0, 3600] seconds, got {budget}")
    model, _ = load_model(model_path, max_params=max_params)
    bundle = load_data(data)
    target = Target(model, bundle, OwnerKey.load(victim_key) if victim_key else None)
    strategies: dict[str, Strategy] = {
        **STRATEGIES,
        "nonce_search": functools.partial(nonce_search, budget_s=budget),
    }
    results = forge(target, scheme, strategy, strategies)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in results], default=str))
    else:
        table = Table(title=f"forge: {model_path}")
        for col in ("scheme", "strategy", "outcome", "detail"):
            table.add_column(col)
        for r in results:
            table.add_row(r.scheme, r.strategy, r.outcome, r.detail[:120])
        out.print(table)
        accepted = sum(r.accepted for r in results)
        out.print(f"{len(results)} forged keys, {accepted} accepted", markup=False)
    raise typer.Exit(1 if any(r.accepted for r in results) else 0)

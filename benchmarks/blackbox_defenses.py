"""Which black-box marks survive each defense a thief adds to the server, at what accuracy cost.

For every black-box scheme on digits (one marked CNN each, benchmarks/_blackbox.py) and every
server-side defense (`nnmark serve --defend`: output side label / top1 / round, every input
preprocessing, the autoencoder, the rejection filters), the marked model is served by the real
OIP v2 server on a loopback port (nnmark.remote.server.serving) and verified through the
protocol only (RemoteSuspect + nnmark.verify, what `nnmark verify --remote` runs): verdict,
p-value and the queries used, with every key timestamped by a loopback TSA as an owner's would be
(frontier's, newlabel's and unrelated's claims need one); a server that refuses queries is
reported as "refused". The plain
model, served with the same defense, is verified with every key (a claim there is a false
positive). The clean accuracy of each defended server is measured in process with the same
`Evading` pipeline the server runs (tests/remote checks they answer alike), a refused input
counting as wrong. The segmentation mark (segtrigger, a U-Net on 32 x 32 BBBC039 tiles) gets
the same treatment, with Dice as the fidelity.

    .venv/bin/python benchmarks/blackbox_defenses.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _blackbox import DEFAULT_CACHE, digits_suite, seg_pair
from torch import nn

from nnmark import verify
from nnmark.data.base import DataBundle
from nnmark.keys import OwnerKey
from nnmark.remote.client import QueriesRefused, RemoteSuspect
from nnmark.remote.evasions import Evading, fit_evasions, parse_evasion
from nnmark.remote.server import create_app, serving
from nnmark.tasks import get_task
from nnmark.testing.tsa import LoopbackTSA

from _common import write_results

DEFENSES = [
    "none",
    "label",
    "top1",
    "round:decimals=1",
    "quantize:bits=3",
    "noise:sigma=0.1",
    "smooth:size=3",
    "gauss:sigma=1",
    "median:size=3",
    "squeeze:bits=3,size=3",
    "flip",
    "jpeg:quality=75",
    "occlude:size=0.25",
    "autoencoder",
    "reject:by=confidence,threshold=0.9",
    "reject:by=recon",
    "reject:by=feature",
    "reject:by=recon,action=random",
]


def defended(spec: str, model: nn.Module, data: DataBundle) -> list[Any]:
    if spec == "none":
        return []
    return fit_evasions([parse_evasion(spec)], model, data, seed=0)


def fidelity(model: nn.Module, defenses: list[Any], data: DataBundle) -> tuple[float, float]:
    """(accuracy or Dice of the defended server on the test split, share of inputs refused)."""
    x, y = data.tensors("test")
    ans = Evading(model, defenses, seed=0)(x)
    task = get_task(data.task)
    if data.task == "classification":
        right = (ans.probs.argmax(1) == y) & ~ans.refused
        return float(right.float().mean()), float(ans.refused.float().mean())
    logits = torch.logit(ans.probs.clamp(1e-6, 1 - 1e-6))
    logits[ans.refused] = -1.0  # a refused tile counts as all background
    return task.finish(task.counts(logits, y))["dice"], float(ans.refused.float().mean())


def remote_verdict(
    model: nn.Module, defenses: list[Any], key: OwnerKey, shape: Any, suite: Any = None
) -> dict[str, Any]:
    app = create_app(model, shape, model_name="m", defenses=defenses, seed=0)
    with serving(app) as url:
        suspect = RemoteSuspect(url)
        try:
            v = verify(suspect, key) if suite is None else suite.verify(suspect, key)
        except QueriesRefused:
            return {"verdict": "refused", "queries": suspect.queries, "p_value": None}
    return {"verdict": v.verdict, "queries": v.queries, "p_value": v.p_value}


def cell(r: dict[str, Any]) -> str:
    if r["verdict"] == "refused":
        return f"refused ({r['queries']})"
    word = "**found**" if r["verdict"] == "found" else "not found"
    return f"{word} ({r['queries']}, p {r['p_value']:.0e})"


def run(cache: Path) -> None:
    torch.set_num_threads(1)
    with LoopbackTSA() as tsa:
        run_with(digits_suite(cache, tsa=tsa), cache, time.perf_counter())


def run_with(suite: Any, cache: Path, t0: float) -> None:
    data = suite.data
    shape = data.input_shape
    names = list(suite.marked)
    rows: list[dict[str, Any]] = []
    for spec in DEFENSES:
        row: dict[str, Any] = {"defense": spec, "schemes": {}, "plain": {}}
        acc_plain, ref_plain = fidelity(suite.plain, defended(spec, suite.plain, data), data)
        row["plain_accuracy"], row["plain_refused"] = acc_plain, ref_plain
        accs = []
        for name in names:
            model, key = suite.marked[name]
            ds = defended(spec, model, data)
            acc, refused = fidelity(model, ds, data)
            res = remote_verdict(model, ds, key, shape, suite)
            res |= {"accuracy": acc, "refused_share": refused}
            row["schemes"][name] = res
            accs.append(acc)
            pd = defended(spec, suite.plain, data)
            row["plain"][name] = remote_verdict(suite.plain, pd, key, shape, suite)
        row["mean_marked_accuracy"] = sum(accs) / len(accs)
        row["mean_marked_drop"] = (
            rows[0]["mean_marked_accuracy"] if rows else row["mean_marked_accuracy"]
        ) - row["mean_marked_accuracy"]
        rows.append(row)
        print(spec, {n: cell(row["schemes"][n]) for n in names}, flush=True)

    seg_data, seg_plain, seg_marked, seg_key = seg_pair(cache)
    seg_rows = []
    for spec in DEFENSES:
        if spec.startswith("reject:by=confidence"):
            continue  # a per-pixel probability has no class confidence worth the name
        ds = defended(spec, seg_marked, seg_data)
        dice, refused = fidelity(seg_marked, ds, seg_data)
        res = remote_verdict(seg_marked, ds, seg_key, seg_data.input_shape)
        plain_res = remote_verdict(
            seg_plain, defended(spec, seg_plain, seg_data), seg_key, seg_data.input_shape
        )
        seg_rows.append(
            {"defense": spec, "dice": dice, "refused_share": refused, **res, "plain": plain_res}
        )
        print("segtrigger", spec, cell(res), flush=True)
    seconds = time.perf_counter() - t0

    base = rows[0]
    head = "| defense | accuracy plain | marked (drop) | " + " | ".join(names) + " | false claims |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for r in rows:
        false = sum(r["plain"][n]["verdict"] == "found" for n in names)
        refused = f", {r['plain_refused']:.0%} refused" if r["plain_refused"] else ""
        lines.append(
            f"| `{r['defense']}` | {r['plain_accuracy']:.4f}{refused} | "
            f"{r['mean_marked_accuracy']:.4f} ({r['mean_marked_drop'] * 100:+.1f} pts) | "
            + " | ".join(cell(r["schemes"][n]) for n in names)
            + f" | {false} of {len(names)} |"
        )
    survive = {
        n: [r["defense"] for r in rows if r["schemes"][n]["verdict"] == "found"] for n in names
    }
    seg_lines = [
        "| defense | Dice (refused) | segtrigger, marked | plain U-Net |",
        "|---|---|---|---|",
    ]
    for r in seg_rows:
        seg_lines.append(
            f"| `{r['defense']}` | {r['dice']:.4f} ({r['refused_share']:.0%}) | {cell(r)} | "
            f"{cell(r['plain'])} |"
        )
    body = (
        f"""
Every black-box scheme on digits (CNN, 20 epochs; frontier fine-tuned 20 epochs into the plain
model; its exact null needs no calibration), served by the real OIP v2 server on a loopback
port with one defense at a time, and verified through the protocol only (`RemoteSuspect` +
`nnmark.verify`, as `nnmark verify --remote`; alpha 1e-6). A cell reads verdict (queries used,
Bonferroni-adjusted p); "refused" is a server answering HTTP 403, which `verify --remote`
reports with exit 2. Accuracy: the defended server's test accuracy (359 digits, a refused input
counted wrong) for the plain model, and the mean over the marked models with its drop from the
undefended marked models; measured in process with the same `Evading` pipeline the server
runs. False claims: the plain model served with the same defense, verified with each key.
{len(rows)} defenses x {len(names)} schemes, {seconds:.0f} s wall (models cached in {cache}).

{chr(10).join(lines)}

Undefended accuracy: plain {base["plain_accuracy"]:.4f}, marked mean
{base["mean_marked_accuracy"]:.4f}.

## Which defenses each mark survives

"""
        + "\n".join(
            f"- **{n}**: {len(v)} of {len(rows)}: " + ", ".join(f"`{d}`" for d in v)
            for n, v in survive.items()
        )
        + f"""

## Segmentation: segtrigger on BBBC039 (32 x 32 tiles, width-8 U-Net)

Same protocol, Dice on the 24 test tiles (a refused tile counted as all background). A query is
one 32 x 32 input; the verdict decodes 64 key blocks (exact binomial null, no calibration).

{chr(10).join(seg_lines)}
"""
    )
    write_results(
        "blackbox_defenses",
        {"seconds": seconds, "rows": rows, "segmentation": seg_rows, "survives": survive},
        body,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where models are cached")
    run(ap.parse_args().cache)


if __name__ == "__main__":
    main()

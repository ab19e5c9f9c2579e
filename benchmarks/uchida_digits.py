"""The digits Uchida figures of README.md, over seeds: Uchida's Table 7 (fine-tune-to-embed
against Eq. 6, writing the bits into the weights alone) and the mark's robustness to the
weight attacks, blind and realigned to the owner's unmarked model.

Per seed s (0, 1, 2 by default), on digits with the `cnn`:

- plain: the default recipe (`TrainConfig(seed=s)`).
- Table 7: a 256-bit random-key mark fine-tuned into plain at `nnmark embed`'s recipe
  (`default_recipe("uchida", finetune=True)`), and Eq. 6 (`embed_without_training`) at lam 0.1,
  1, 10, 100 under the same key.
- Robustness of the 64-bit mark trained from plain's initial weights (`nnmark train --scheme
  uchida --bits 64`): 50 % global pruning, 10 epochs of fine-tuning on the thief split, int8
  quantization, weight noise at 0.1 std, and `permute` read blind.
- Realigned to the unmarked model (`verify --reference-unmarked`): the 64-bit mark fine-tuned
  into plain (its key commits to plain, as `nnmark embed` does), after `permute`, `scale` and
  `permute,finetune:epochs=3`.

Every attack runs at attack seed 1 (weights) or 3 (realignment), as the tests do.

    python benchmarks/uchida_digits.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch

from nnmark import (
    OwnerKey,
    TrainConfig,
    attack,
    default_recipe,
    embed,
    load_data,
    new_model,
    train,
    verify,
)
from nnmark.api import bound_scheme
from nnmark.defenses.realign import realign_suspect
from nnmark.io import model_sha256
from nnmark.schemes.uchida import embed_without_training
from nnmark.suspect import ModuleSuspect

from _common import accuracy_on_test, write_results

LAMS = (0.1, 1.0, 10.0, 100.0)
ATTACKS = ("prune:fraction=0.5", "finetune:epochs=10", "quantize:bits=8", "noise:sigma=0.1")
#: keys commit their creation time: fixed, so a rerun draws the same keys
CREATED = "2026-01-01T00:00:00+00:00"
BLIND = ("none", *ATTACKS, "permute")
REALIGNED = ("permute", "scale", "permute,finetune:epochs=3")


def one_seed(seed: int) -> dict[str, Any]:
    data = load_data("digits")
    acc = accuracy_on_test(data)
    recipe = TrainConfig(seed=seed)
    plain = train(new_model("cnn", data, seed=seed), data, recipe)
    out: dict[str, Any] = {"seed": seed, "plain": acc(plain)}

    key = OwnerKey.new(f"table 7, seed {seed}", nonce=f"{seed + 0x70:02x}" * 16, created=CREATED)
    tuned, key = embed(
        plain, data, "uchida", key=key, bits=256, config=default_recipe("uchida", finetune=True)
    )
    out["finetune_256"] = {"ber": verify(tuned, key).ber, "accuracy": acc(tuned)}
    scheme = bound_scheme(key, 0)
    out["eq6"] = []
    for lam in LAMS:
        edited = embed_without_training(copy.deepcopy(plain), scheme, lam)  # type: ignore[arg-type]
        out["eq6"].append({"lam": lam, "ber": verify(edited, key).ber, "accuracy": acc(edited)})

    key = OwnerKey.new(f"robustness, seed {seed}", nonce=f"{seed + 0x50:02x}" * 16, created=CREATED)
    fresh = new_model("cnn", data, seed=seed)
    marked, key = embed(fresh, data, "uchida", key=key, bits=64, config=recipe)
    out["attacks"] = {}
    for spec in BLIND:
        attacked = marked if spec == "none" else attack(marked, spec, data, seed=1)
        v = verify(attacked, key)
        out["attacks"][spec] = {"ber": v.ber, "verdict": v.verdict, "accuracy": acc(attacked)}

    key = OwnerKey.new(f"realigned, seed {seed}", nonce=f"{seed + 0x30:02x}" * 16, created=CREATED)
    key = key.with_reference(model_sha256(plain))
    fine, key = embed(
        plain, data, "uchida", key=key, bits=64, config=default_recipe("uchida", finetune=True)
    )
    schemes = [bound_scheme(key, m.index) for m in key.marks]
    out["realigned"] = {}
    for spec in REALIGNED:
        attacked = attack(fine, spec, data, seed=3)
        view = realign_suspect(ModuleSuspect(attacked), plain, schemes, unmarked=True)
        v = verify(view, key)
        out["realigned"][spec] = {"ber": v.ber, "verdict": v.verdict}
    return out


def pct(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f} %"


def read_cells(cells: list[dict[str, Any]]) -> str:
    """'BER per seed | found' of one row."""
    found = sum(c["verdict"] == "found" for c in cells)
    return " / ".join(f"{c['ber']:.3f}" for c in cells) + f" | {found}/{len(cells)}"


def markdown(rows: list[dict[str, Any]], seconds: float) -> str:
    seeds = ", ".join(str(r["seed"]) for r in rows)
    lines = [
        f"digits, `cnn`, seeds {seeds}; plain at the default recipe (accuracy "
        + " / ".join(f"{100 * r['plain']:.2f}" for r in rows)
        + f", mean {pct([r['plain'] for r in rows])}); {seconds:.0f} s (1 torch thread).",
        "",
        "## Table 7 (256 bits)",
        "",
        "| embedding | BER per seed | mean accuracy | accuracy per seed |",
        "|---|---|---|---|",
    ]

    def row(name: str, cells: list[dict[str, Any]]) -> str:
        bers = " / ".join(f"{c['ber']:.3f}" for c in cells)
        accs = " / ".join(f"{100 * c['accuracy']:.2f}" for c in cells)
        return f"| {name} | {bers} | {pct([c['accuracy'] for c in cells])} | {accs} |"

    lines.append(row("fine-tune-to-embed (nnmark embed)", [r["finetune_256"] for r in rows]))
    for i, lam in enumerate(LAMS):
        lines.append(row(f"Eq. 6, lam {lam:g}", [r["eq6"][i] for r in rows]))
    lines += [
        "",
        "## Robustness of the 64-bit mark trained from scratch (blind)",
        "",
        "| attack | BER per seed | found | mean accuracy | accuracy per seed |",
        "|---|---|---|---|---|",
    ]
    for spec in BLIND:
        cells = [r["attacks"][spec] for r in rows]
        accs = " / ".join(f"{100 * c['accuracy']:.2f}" for c in cells)
        lines.append(
            f"| {spec} | {read_cells(cells)} | {pct([c['accuracy'] for c in cells])} | {accs} |"
        )
    lines += [
        "",
        "## The fine-tuned 64-bit mark, realigned to the unmarked model (--reference-unmarked)",
        "",
        "| attack | BER per seed | found |",
        "|---|---|---|",
    ]
    for spec in REALIGNED:
        lines.append(f"| {spec} | {read_cells([r['realigned'][spec] for r in rows])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    rows = [one_seed(s) for s in range(args.seeds)]
    seconds = time.time() - start
    write_results("uchida_digits", {"seeds": rows, "seconds": seconds}, markdown(rows, seconds))


if __name__ == "__main__":
    main()

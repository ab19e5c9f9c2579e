"""Realignment to the unmarked twin over fresh keys: the figure test_attack_cli (tests/attacks/
test_attacks_weights.py) reads on one key a run.

A 64-bit Uchida mark trained from scratch on digits (cnn, seed 0, 20 epochs, as `nnmark train
--scheme uchida --bits 64 --seed 0` does), its key committed to the plain twin (the same init
and recipe without the mark: `--reference-unmarked`); for each key, the marked model morphed
and its channels pruned (25 %, structured), both at attack seed 3, then verified blind and
realigned to the twin, with channels paired by weights (as `verify --reference-unmarked` does)
and, for comparison, by activations on random inputs alone. `--scheme` and `--attacks` run
another white-box scheme or other attacks the same way (results named realign_keys_<scheme>).

    python benchmarks/realign_keys.py [--keys 12] [--scheme stdm --bits 0 --attacks permute]
"""

from __future__ import annotations

import argparse
import time

import torch

from nnmark import OwnerKey, TrainConfig, attack, embed, load_data, new_model, train, verify
from nnmark.api import bound_scheme
from nnmark.defenses import realign as realign_module
from nnmark.defenses.realign import realign_suspect
from nnmark.suspect import ModuleSuspect

from _common import write_results

CREATED = "2026-01-01T00:00:00+00:00"
ATTACKS = ("morph", "prune:structured=true,fraction=0.25")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=12)
    ap.add_argument("--scheme", default="uchida", help="a white-box scheme (default uchida)")
    ap.add_argument("--bits", type=int, default=64, help="0: the scheme's default")
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), help="attack specs")
    ap.add_argument(
        "--scales-kept",
        action="store_true",
        help="also realign paired by weights with each channel's scale left as the suspect's "
        "(not set to the twin's): what the rescaling costs a mark that reads magnitudes",
    )
    args = ap.parse_args()
    pairings = ("weights", "activations", *(("scales_kept",) if args.scales_kept else ()))
    torch.set_num_threads(1)
    start = time.time()
    data = load_data("digits")
    cfg = TrainConfig(epochs=20, seed=0)
    twin = train(new_model("cnn", data, seed=0), data, cfg)
    rows = []
    for i in range(args.keys):
        key = OwnerKey.new("realign keys", nonce=f"{i:032x}", created=CREATED)
        marked, key = embed(
            new_model("cnn", data, seed=0), data, args.scheme, key=key, bits=args.bits or None,
            config=cfg, reference=twin,
        )  # fmt: skip
        schemes = [bound_scheme(key, m.index, data) for m in key.marks]
        for spec in args.attacks:
            copy = attack(marked, spec, data, seed=3)
            row = {"key": i, "attack": spec, "blind_ber": verify(copy, key).ber}
            views = _views(copy, twin, schemes)
            for pairing in pairings:
                v = verify(views[pairing], key)
                row[f"{pairing}_ber"], row[f"{pairing}_p"] = v.ber, v.p_value
                row[f"{pairing}_verdict"] = v.verdict
            rows.append(row)
            print(row, flush=True)
    name = "realign_keys" if args.scheme == "uchida" else f"realign_keys_{args.scheme}"
    what = f"{args.bits or 'default'}-bit {args.scheme}"
    payload = {"scheme": args.scheme, "bits": args.bits or None, "keys": args.keys, "rows": rows}
    markdown = _markdown(rows, what, args.attacks, pairings, time.time() - start)
    write_results(name, payload, markdown)


def _views(copy, twin, schemes):  # type: ignore[no-untyped-def]
    """Each view of `copy` realigned to `twin` (verify reads all of them; here each alone):
    channels paired by weights (the default), the same pairing with each channel's scale left
    as the suspect's (realign.keep_scales), and, with the weight pass switched off, paired by
    activations alone."""
    by_weights = realign_suspect(ModuleSuspect(copy), twin, schemes, unmarked=True)
    passes = realign_module.WEIGHT_PASSES
    realign_module.WEIGHT_PASSES = 0
    try:
        by_activations = realign_suspect(ModuleSuspect(copy), twin, schemes, unmarked=True)
    finally:
        realign_module.WEIGHT_PASSES = passes
    views = {
        "weights": by_weights.realigned,
        "scales_kept": by_weights.scales_kept,
        "activations": by_activations.realigned,
    }
    assert all(v is not None for v in views.values()), by_weights.failure
    return views


def _markdown(  # type: ignore[type-arg]
    rows: list[dict], what: str, attacks: list[str], pairings: tuple[str, ...], seconds: float
) -> str:
    keys = len({r["key"] for r in rows})
    heads = {
        "weights": "realigned, paired by weights",
        "activations": "paired by activations",
        "scales_kept": "paired by weights, scales kept",
    }
    lines = [
        f"digits cnn, {what} from scratch (seed 0, 20 epochs), {keys} keys (fresh "
        f"nonces), each key committed to the plain twin; attacks at seed 3; "
        f"{seconds:.0f} s (1 torch thread).",
        "",
        "| attack | blind: worst BER | "
        + " | ".join(f"{heads[p]}: worst BER / found" for p in pairings)
        + " |",
        "|---|---|" + "---|" * len(pairings),
    ]
    for spec in attacks:
        mine = [r for r in rows if r["attack"] == spec]
        cells = []
        for pairing in pairings:
            found = sum(r[f"{pairing}_verdict"] == "found" for r in mine)
            worst = max(r[f"{pairing}_ber"] for r in mine)
            cells.append(f"{worst:.3f} / {found} of {len(mine)}")
        lines.append(f"| {spec} | {max(r['blind_ber'] for r in mine):.3f} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

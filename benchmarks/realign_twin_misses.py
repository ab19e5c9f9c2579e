"""Why the twin route misses what it misses: each marked model of realign_null_views.py read
before any attack and after fine-tuning alone (no permutation, nothing to realign).

For every (scheme, architecture, key) of the protocol (realign_null.py's cached models: marked
at the scheme's defaults, 10 epochs, committed to its unmarked twin): the marked model as given
(plain verify), and realigned to its twin, each view alone (realigned; scales kept) and as
verify reads it (three views, p tripled); then `finetune:epochs=3` at the key's seed, as given.
A key the marked model itself does not show, or that fine-tuning alone removes, is a miss of
the mark, not of realignment.

    python benchmarks/realign_twin_misses.py [--schemes stdm,actsign,deepsigns] [--threads 1]
        [--schemes deepsigns --name realign_twin_misses_deepsigns]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from realign_null import keys_per_scheme, marked_models, protocol_parser, twin_models

from nnmark import attack, load_data, verify
from nnmark.api import bound_scheme
from nnmark.defenses.realign import realign_suspect
from nnmark.suspect import ModuleSuspect

from _common import write_results

FINETUNE = "finetune:epochs=3"


def _read(v: Any) -> dict[str, Any]:
    return {"ber": v.ber, "p": v.p_value, "found": v.verdict == "found"}


def main() -> None:
    ap = protocol_parser("realign_twin_misses")
    ap.set_defaults(schemes="stdm,actsign,deepsigns")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("digits")
    cache = Path(args.cache)
    n_keys = keys_per_scheme(args)
    t0 = time.perf_counter()
    rows = []
    for arch in args.archs.split(","):
        twins = twin_models(arch, max(n_keys.values()), data, cache)
        for scheme in args.schemes.split(","):
            marked = marked_models(scheme, arch, n_keys[scheme], data, cache, twins)
            for ki, (model, key) in enumerate(marked):
                bound = [bound_scheme(key, m.index) for m in key.marks]
                s = realign_suspect(ModuleSuspect(model), twins[ki], bound, unmarked=True)
                assert s.realigned and s.scales_kept, s.failure
                tuned = attack(model, FINETUNE, data, seed=ki)
                row = {
                    "scheme": scheme,
                    "arch": arch,
                    "key": ki,
                    "given": _read(verify(model, key)),
                    "realigned": _read(verify(s.realigned, key)),
                    "kept": _read(verify(s.scales_kept, key)),
                    "verdict": _read(verify(s, key)),
                    "finetuned_given": _read(verify(tuned, key)),
                }
                rows.append(row)
                print(row, flush=True)
    payload = {
        "protocol": {"archs": args.archs.split(","), "keys_per_scheme_and_arch": n_keys},
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    md = markdown(payload)
    print(md)
    if not args.no_write:
        write_results(args.name, payload, md)


def markdown(payload: dict[str, Any]) -> str:
    cols = ("given", "realigned", "kept", "verdict", "finetuned_given")
    names = {
        "given": "unattacked, as given",
        "realigned": "unattacked, realigned",
        "kept": "unattacked, scales kept",
        "verdict": "unattacked, verdict (3 views, p x3)",
        "finetuned_given": f"{FINETUNE} alone, as given",
    }
    lines = [
        "realign_null_views.py's marked models (realign_null.py's cache; scheme defaults, 10 "
        "epochs, each committed to its twin) read before any attack, and after fine-tuning "
        "alone; per cell: found / keys (BER of each key, in key order).",
        "",
        "| scheme | arch | " + " | ".join(names[c] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    rows = payload["rows"]
    for scheme, arch in dict.fromkeys((r["scheme"], r["arch"]) for r in rows):
        mine = [r for r in rows if r["scheme"] == scheme and r["arch"] == arch]
        cells = []
        for c in cols:
            found = sum(r[c]["found"] for r in mine)
            bers = " ".join(f"{r[c]['ber']:.3f}" for r in mine)
            cells.append(f"{found}/{len(mine)} ({bers})")
        lines.append(f"| {scheme} | {arch} | " + " | ".join(cells) + " |")
    lines += ["", f"Run time: {payload['seconds']} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

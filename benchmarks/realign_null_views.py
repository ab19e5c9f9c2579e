"""The null of `verify --reference-unmarked TWIN` as verify now reads it: each white-box mark
realigned to its committed twin is read three ways (realigned; realigned with the suspect's
channel scales kept; as given), the smallest p tripled (nnmark.api.UNMARKED_REFERENCE_LOOKS).

`benchmarks/realign_null.py` measured the twin route with its first view only, before the view
with the scales kept existed. This script reruns that route on the same protocol (the same
marked models, twins and never-marked models, built by realign_null's functions and cached in
the same place) and reports, per scheme, over every (key, never-marked model) pair:

- **unaligned**: plain `verify` (the control);
- **realigned**: the suspect realigned to the twin, read alone (realign_null's "unmarked ref");
- **scales kept**: the same pairing with each channel's scale left as the suspect's, read alone;
- **verdict**: what `verify SUSPECT --key K --reference-unmarked TWIN` gives (the three views,
  p tripled).

Each view is a function of the suspect and the twin, neither of which depends on the key, so
each view's p is exact and the tripled minimum is conservative: false claims at 1e-6 must be 0,
the verdict's FPR at 0.05 at most 0.05, and each view's pull (realign_null's sensitive check) 0
within its interval. Legitimate side: each marked model attacked (permute, scale, morph,
permute,finetune:epochs=3), then verified with the twin route: found / keys, and which view
read it.

    python benchmarks/realign_null_views.py [--keys 5] [--unmarked 16] [--archs cnn,mlp,resnet20]
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from realign_null import (
    ATTACKS,
    STRICT,
    keys_per_scheme,
    marked_models,
    null_row,
    protocol_parser,
    twin_models,
    unmarked_models,
)

from nnmark import attack, load_data, verify
from nnmark.api import bound_scheme
from nnmark.defenses.realign import realign_suspect
from nnmark.suspect import ModuleSuspect

from _common import write_results

VARIANTS = ("unaligned", "realigned", "kept", "verdict")
NAMES = {"realigned": "realigned", "kept": "scales kept", "verdict": "verdict (3 views, p x3)"}


def read_by(v: Any) -> str:
    """Which view a twin-route verdict was read from (its details say when there were several)."""
    label = str(v.details.get("read_from", ""))
    if label.endswith("scales kept"):
        return "scales kept"
    if "realigned" in label:
        return "realigned"
    return "as given" if label else "-"


def main() -> None:
    ap = protocol_parser("realign_null_views")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("digits")
    cache = Path(args.cache)
    archs = args.archs.split(",")
    schemes = args.schemes.split(",")
    t0 = time.perf_counter()
    plains = {a: unmarked_models(a, args.unmarked, data, cache) for a in archs}
    n_keys = keys_per_scheme(args)
    twins = {a: twin_models(a, max(n_keys.values()), data, cache) for a in archs}
    results: dict[str, Any] = {}
    for scheme in schemes:
        rows: dict[str, list[Any]] = {k: [] for k in VARIANTS}
        keys: list[int] = []
        legit: list[dict[str, Any]] = []
        for arch in archs:
            for ki, (marked, key) in enumerate(
                marked_models(scheme, arch, n_keys[scheme], data, cache, twins[arch])
            ):
                bound = [bound_scheme(key, m.index) for m in key.marks]
                twin = twins[arch][ki]
                assert verify(twin, key).verdict == "not_found"
                for _, plain in plains[arch]:
                    keys.append(archs.index(arch) * 1000 + ki)
                    rows["unaligned"].append(verify(plain, key))
                    # the route's own realignment; its two views also read alone
                    suspect = realign_suspect(ModuleSuspect(plain), twin, bound, unmarked=True)
                    assert suspect.realigned and suspect.scales_kept, suspect.failure
                    rows["realigned"].append(verify(suspect.realigned, key))
                    rows["kept"].append(verify(suspect.scales_kept, key))
                    rows["verdict"].append(verify(suspect, key))
                for spec in ATTACKS:
                    attacked = attack(marked, spec, data, seed=ki)
                    suspect = realign_suspect(ModuleSuspect(attacked), twin, bound, unmarked=True)
                    v = verify(suspect, key)
                    legit.append(
                        {
                            "arch": arch,
                            "key": ki,
                            "attack": spec,
                            "verdict": v.verdict,
                            "ber": v.ber,
                            "p": v.p_value,
                            "read_from": read_by(v),
                            "reason": v.reason,
                        }
                    )
        ctrl = rows["unaligned"]
        results[scheme] = {
            **{k: null_row(v, ctrl, keys) for k, v in rows.items()},
            "legit": legit,
        }
        r = results[scheme]
        print(
            f"{scheme:12s} "
            + " | ".join(
                f"{k}: {r[k]['false_claims_1e-6']} claims, FPR {r[k]['fpr_0.05']:.3f}"
                for k in VARIANTS
            )
            + f" | legit {sum(x['verdict'] == 'found' for x in legit)}/{len(legit)}",
            flush=True,
        )
    payload = {
        "protocol": {
            "data": "digits",
            "archs": archs,
            "keys_per_scheme_and_arch": n_keys,
            "unmarked_per_arch": args.unmarked,
            "models": "realign_null.py's (marked: scheme defaults, 10 epochs, committed to "
            "its twin; twin: same initialisation and recipe without the mark; never-marked: "
            "half Adam lr 1e-3 10 epochs, half SGD lr 0.05 momentum 0.9 15 epochs)",
            "attacks": ATTACKS,
            "alpha_strict": STRICT,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    md = markdown(payload)
    print(md)
    if not args.no_write:
        write_results(args.name, payload, md)


def _cell(x: dict[str, Any], pull: bool = True) -> str:
    """Claims | FPR [interval] | pull. The verdict's pull is not shown: it reads the view of
    smallest p, the one agreeing most with the key, so its agreement is biased up by that
    choice (which the tripled p pays for and a pull would not)."""
    lo, hi = x["cp95"]
    head = f"{x['false_claims_1e-6']} | {x['fpr_0.05']:.3f} [{lo:.3f}, {hi:.3f}] | "
    if not pull or x["pull"] is None:
        return head + "-"
    half = x["pull_ci95_half"]
    spread = "" if half is None else f" ± {half:.3f}"
    return head + f"{x['pull']:+.3f}{spread} ({x['pull_keys_positive']}/{x['pull_keys']})"


def markdown(payload: dict[str, Any]) -> str:
    p = payload["protocol"]
    res = payload["results"]
    lines = [
        f"digits; architectures {', '.join(p['archs'])}; keys per scheme and architecture: "
        + ", ".join(f"{s} {n}" for s, n in p["keys_per_scheme_and_arch"].items())
        + f"; {p['unmarked_per_arch']} never-marked models per architecture; models: "
        + p["models"]
        + ". Every (key, never-marked model of the same architecture) pair is verified with "
        "`--reference-unmarked TWIN` (the key's committed twin).",
        "",
        "Claims: p < 1e-6 (must be 0). FPR: p < 0.05 with its exact 95 % interval (pairs of one "
        "key are correlated: the interval is optimistic). Pull: per key, mean agreement of the "
        "read bits with the key minus the same unaligned, averaged over keys ± 95 % t "
        "half-width (keys with a positive pull / keys); 0 under a valid null. The verdict "
        "triples the smallest of three p-values (each exact), so its claims are bounded by the "
        "union bound; its pull is not shown: it reads the view that agrees most with the key, "
        "which the tripled p pays for and a pull would not.",
        "",
        "| scheme | pairs | unaligned: claims | unaligned: FPR | "
        + " | ".join(f"{NAMES[k]}: claims | {NAMES[k]}: FPR | {NAMES[k]}: pull" for k in NAMES)
        + " |",
        "|---|---|---|---|" + "---|" * 3 * len(NAMES),
    ]
    for scheme, r in res.items():
        u = r["unaligned"]
        lines.append(
            f"| {scheme} | {u['pairs']} | {u['false_claims_1e-6']} | {u['fpr_0.05']:.3f} | "
            + " | ".join(_cell(r[k], pull=k != "verdict") for k in NAMES)
            + " |"
        )
    lines += [
        "",
        "Legitimate side: each marked model attacked, then verified with the twin route; "
        "found / keys (largest BER of a found verdict; the view each found verdict was read "
        "from).",
        "",
        "| scheme | " + " | ".join(p["attacks"]) + " |",
        "|---|" + "---|" * len(p["attacks"]),
    ]
    for scheme, r in res.items():
        cells = []
        for spec in p["attacks"]:
            rows = [x for x in r["legit"] if x["attack"] == spec]
            found = [x for x in rows if x["verdict"] == "found"]
            worst = max((x["ber"] for x in found if x["ber"] is not None), default=None)
            by = Counter(x["read_from"] for x in found)
            how = ", ".join(f"{k} {n}" for k, n in sorted(by.items()))
            ber = "-" if worst is None else f"{worst:.3f}"
            cells.append(f"{len(found)}/{len(rows)} (max BER {ber}; {how or '-'})")
        lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    lines += ["", f"Run time: {payload['seconds']} s (models trained where not cached)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

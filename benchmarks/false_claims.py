"""False claims over keys, architectures and recipes (issue 13): every scheme, as issued and
with `--reference`, on 30 never-marked digits models (cnn, mlp, resnet20 x Adam, SGD x 5 seeds),
and segtrigger on unmarked U-Nets. The protocol is nnmark.bench.false_claims's docstring; the
same check runs in `nnmark bench --false-claims`.

    .venv/bin/python benchmarks/false_claims.py [--keys 10] [--models-per 5] [--jobs 2]

Results: benchmarks/results/false_claims.{json,md,png}; models cached under runs/false_claims.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnmark.bench.false_claims import FalseClaimSpec, run_false_claims, write_outputs
from nnmark.data import SHARED_DATA

from _common import RESULTS, machine

SHARED = SHARED_DATA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--reference-keys", type=int, default=5)
    ap.add_argument("--models-per", type=int, default=5, help="per architecture and recipe")
    ap.add_argument("--seg-models", type=int, default=6)
    ap.add_argument("--schemes", nargs="*", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("runs/false_claims"))
    ap.add_argument("--name", default="false_claims", help="results' file name (no suffix)")
    args = ap.parse_args()
    fashion = f"fashion-mnist:{SHARED / 'fashion-mnist'}"
    spec = FalseClaimSpec(
        keys=args.keys,
        reference_keys=args.reference_keys,
        models_per=args.models_per,
        seg_models=args.seg_models,
        schemes=tuple(args.schemes) if args.schemes else None,
        seg_data=f"seg:{SHARED / 'seg-bbbc039'}",
        extra_data=(fashion,),
        unrelated_source=fashion,
    )
    report = run_false_claims(spec, args.cache, jobs=args.jobs, progress=print)
    command = "python " + " ".join(["benchmarks/false_claims.py", *sys.argv[1:]])
    write_outputs(report, RESULTS, command, machine(), args.name)
    bad = [k for k, v in report.summary().items() if not v["meets"]]
    print(f"done in {report.seconds:.0f} s; rows failing the requirement: {bad or 'none'}")


if __name__ == "__main__":
    main()

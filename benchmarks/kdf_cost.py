"""The reference cost of one key derivation (scrypt at nnmark's default N = 2^16, r = 8, p = 1):
what each try of a forger's key search pays, and the figure `nnmark.keys.REFERENCE_SECONDS`
states. Verdicts use that fixed figure (a verdict must not depend on how busy the verifier is);
this script measures it, single-threaded, on fresh inputs.

    .venv/bin/python benchmarks/kdf_cost.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics

from nnmark.api import CLAIM_CPU_YEARS, SECONDS_PER_YEAR
from nnmark.keys import DEFAULT_KDF, REFERENCE_SECONDS, derivation_seconds, measure_derivation

from _common import write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for n in (1 << 14, 1 << 15, 1 << 16, 1 << 17):
        kdf = {**DEFAULT_KDF, "n": n}
        times = [measure_derivation(kdf) for _ in range(args.repeats)]
        rows.append(
            {
                "n": n,
                "r": kdf["r"],
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "reference_s": derivation_seconds(kdf),
                "memory_mib": 128 * n * kdf["r"] / 2**20,
            }
        )
        print(rows[-1], flush=True)
    default = next(r for r in rows if r["n"] == DEFAULT_KDF["n"])
    claim_p = REFERENCE_SECONDS / (CLAIM_CPU_YEARS * SECONDS_PER_YEAR)
    md = [
        f"scrypt derivations, {args.repeats} per setting, one thread, fresh inputs. The reference "
        f"figure nnmark's verdicts use at the default N = 2^16, r = 8: {REFERENCE_SECONDS} s; "
        f"measured median here {default['median_s']:.3f} s (min {default['min_s']:.3f}). The "
        f"claim rule's p-value at that cost (1,000 CPU-years of search): {claim_p:.2e}.",
        "",
        "| N | r | memory MiB | median s | min s | max s | reference s |",
        "|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| 2^{r['n'].bit_length() - 1} | {r['r']} | {r['memory_mib']:.0f} | {r['median_s']:.3f} "
        f"| {r['min_s']:.3f} | {r['max_s']:.3f} | {r['reference_s']:.3f} |"
        for r in rows
    ]
    write_results("kdf_cost", {"rows": rows, "reference_seconds": REFERENCE_SECONDS}, "\n".join(md))


if __name__ == "__main__":
    main()

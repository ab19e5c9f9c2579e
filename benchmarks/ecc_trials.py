"""BCH payloads (nnmark.ecc): exact decoding up to t flipped bits, reported failure beyond t.

For each (message, capacity) nnmark.ecc picks the code (a BCH codeword, repeated to fill the
capacity when that tolerates more errors); then, over `--trials` random trials per error count k
(k = 0 .. t: must always give the exact message; k = t+1 .. min(n, 4t+4): must never give a
wrong message), k random distinct *codeword* bits are flipped in every one of their copies (the
worst case: their majority is lost) and the bits decoded. Beyond t, "failure" is either bchlib
reporting an undecodable word or a miscorrection that the CRC-16 rejects; both are counted.

Second table: independent random flips of the raw carried bits at rate p (what a watermark
channel does), `--trials` trials per rate: how often the exact message comes back, and never a
wrong one. Capacities 897 and 8191 are the position marks' (tartaglione / watermas: 897 marked
entries on the digits CNN).

    python benchmarks/ecc_trials.py [--trials 200]
"""

from __future__ import annotations

import argparse
import random
import time

from nnmark.ecc import decode_bits, encode_message

from _common import write_results

CASES = [
    ("id-7", 64),
    ("ACME Corp", 128),
    ("ACME Corp", 255),
    ("Ünïcode ✓", 511),
    ("owner: ACME Corporation, model v1.2", 1024),
    ("ACME Corp", 897),
    ("ACME Corp", 8191),
]
RATES = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


def run(message: str, capacity: int, trials: int, rng: random.Random) -> dict:
    bits, params = encode_message(message, capacity)
    n, t = params["n"], params["t"]
    within = {"trials": 0, "exact": 0}
    beyond = {"trials": 0, "failure_reported": 0, "bch_failure": 0, "crc_caught": 0, "wrong": 0}
    for k in range(0, min(n, 4 * t + 4) + 1):
        for _ in range(trials):
            flipped = list(bits)
            for j in rng.sample(range(n), k):  # codeword bit j, in all its copies
                for i in range(j, len(bits), n):
                    flipped[i] ^= 1
            r = decode_bits(flipped, params)
            if k <= t:
                within["trials"] += 1
                within["exact"] += r.ok and r.message == message and r.corrected == k
            else:
                beyond["trials"] += 1
                beyond["failure_reported"] += not r.ok
                beyond["wrong"] += r.message is not None and r.message != message
                beyond["bch_failure"] += not r.ok and r.corrected == 0
                beyond["crc_caught"] += not r.ok and r.corrected > 0
    raw = {}
    for p in RATES:
        exact = wrong = 0
        for _ in range(trials):
            r = decode_bits([b ^ (rng.random() < p) for b in bits], params)
            exact += r.ok and r.message == message
            wrong += r.message is not None and r.message != message
        raw[str(p)] = {"trials": trials, "exact": exact, "wrong": wrong}
    return {
        "message": message,
        "capacity": capacity,
        **{k: params[k] for k in ("m", "n", "k", "t", "copies", "tolerable_error_rate")},
        "within_t": within,
        "beyond_t": beyond,
        "raw_flips": raw,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200, help="trials per error count")
    args = ap.parse_args()
    rng = random.Random(0)
    t0 = time.perf_counter()
    rows = [run(m, c, args.trials, rng) for m, c in CASES]
    seconds = time.perf_counter() - t0
    lines = [
        f"{args.trials} trials per error count k; k = 0..t must decode exactly, k = t+1..4t+4 "
        "must never decode to a wrong message.",
        "",
        "| message | capacity | code (n, k, t), GF(2^m) | copies | trials k<=t | exact | "
        "trials k>t | failure reported | of which CRC caught | wrong payload |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, b = r["within_t"], r["beyond_t"]
        lines.append(
            f"| {r['message']} | {r['capacity']} | ({r['n']}, {r['k']}, {r['t']}), m={r['m']} "
            f"| {r['copies']} | {w['trials']} | {w['exact']} | {b['trials']} "
            f"| {b['failure_reported']} | {b['crc_caught']} | {b['wrong']} |"
        )
    lines += [
        "",
        "Random flips of the carried bits at rate p: exact message / wrong message, of "
        f"{args.trials} trials (design margin p* = the rate at which the expected codeword "
        "errors after the majority vote reach t).",
        "",
        "| message | capacity | copies | p* | " + " | ".join(f"p={p}" for p in RATES) + " |",
        "|---|---|---|---|" + "---|" * len(RATES),
    ]
    for r in rows:
        cells = [
            f"{r['raw_flips'][str(p)]['exact']} / {r['raw_flips'][str(p)]['wrong']}" for p in RATES
        ]
        lines.append(
            f"| {r['message']} | {r['capacity']} | {r['copies']} | "
            f"{r['tolerable_error_rate']:.3f} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"Total time {seconds:.1f} s."]
    write_results(
        "ecc_trials", {"trials": args.trials, "rows": rows, "seconds": seconds}, "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

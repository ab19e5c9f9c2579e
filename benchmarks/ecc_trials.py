"""BCH payloads (nnmark.ecc): exact decoding up to t flipped bits, reported failure beyond t.

For each (message, capacity) the strongest BCH code that fits is chosen; then, over `--trials`
random trials per error count k (k = 0 .. t: must always give the exact message; k = t+1 ..
min(n, 4t+4): must never give a wrong message), random distinct bit positions are flipped and
the codeword decoded. Beyond t, "failure" is either bchlib reporting an undecodable word or a
miscorrection that the CRC-16 rejects; both are counted.

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
]


def run(message: str, capacity: int, trials: int, rng: random.Random) -> dict:
    bits, params = encode_message(message, capacity)
    n, t = len(bits), params["t"]
    within = {"trials": 0, "exact": 0}
    beyond = {"trials": 0, "failure_reported": 0, "bch_failure": 0, "crc_caught": 0, "wrong": 0}
    for k in range(0, min(n, 4 * t + 4) + 1):
        for _ in range(trials):
            flipped = list(bits)
            for i in rng.sample(range(n), k):
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
    return {
        "message": message,
        "capacity": capacity,
        **{k: params[k] for k in ("m", "n", "k", "t")},
        "within_t": within,
        "beyond_t": beyond,
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
        "| message | capacity | code (n, k, t), GF(2^m) | trials k<=t | exact | trials k>t "
        "| failure reported | of which CRC caught | wrong payload |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, b = r["within_t"], r["beyond_t"]
        lines.append(
            f"| {r['message']} | {r['capacity']} | ({r['n']}, {r['k']}, {r['t']}), m={r['m']} "
            f"| {w['trials']} | {w['exact']} | {b['trials']} | {b['failure_reported']} "
            f"| {b['crc_caught']} | {b['wrong']} |"
        )
    lines += ["", f"Total time {seconds:.1f} s."]
    write_results(
        "ecc_trials", {"trials": args.trials, "rows": rows, "seconds": seconds}, "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""A never-marked model's channels reordered to read a key made before the reordering.

docs/security.md ("Where the proof stops"): channel orders are free, so a copy of a model that
never saw a key, its channels reordered after the key's secrets exist, computes the same
function and reads that key's bits; such a copy proves nothing about the model it was made
from, and a claim needs the accused's own file (which the verdict names by digest).

For each fresh 64-bit Uchida key (the default host, conv3 of the digits cnn, its 64 input
channels free to reorder with conv2's outputs): a greedy search over swaps of the host's input
channels for the order whose bits read most of the key's, the copy built (conv2's output
channels and bias, conv3's input channels, reordered alike) and checked to compute the same
function, then verified with the key as any suspect would be.

    python benchmarks/reorder_copy.py [--keys 10] [--seconds 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from nnmark import OwnerKey, TrainConfig, load_data, new_model, train, verify
from nnmark.api import bound_scheme
from nnmark.schemes.uchida import Uchida, UchidaConfig

from _common import write_results

CREATED = "2026-01-01T00:00:00+00:00"


def best_order(x: torch.Tensor, w: torch.Tensor, target: torch.Tensor, seconds: float):  # type: ignore[no-untyped-def]
    """A channel order of the host vector `w` (channels x kernel values) that reads `target`
    through the projection `x` (bits x values): greedy swaps by a hinge on the signed logits,
    every pair scored at once, until none helps or `seconds` pass."""
    channels, k = w.shape
    blocks = x.reshape(len(x), channels, k)  # the projection's columns per input channel
    sign = 2 * target.double() - 1
    order = torch.arange(channels)
    start = time.time()
    while time.time() - start < seconds:
        wp = w[order]
        s = torch.einsum("tck,ck->t", blocks, wp)
        # p[t, i, j]: block i's columns against the values now at position j
        p = torch.einsum("tik,jk->tij", blocks, wp)
        own = torch.diagonal(p, dim1=1, dim2=2)  # (t, i): block i against its own values
        swapped = s[:, None, None] + p - own[:, :, None] + p.transpose(1, 2) - own[:, None, :]
        loss = torch.relu(1 - sign[:, None, None] * swapped).sum(0)
        now = float(torch.relu(1 - sign * s).sum())
        loss.fill_diagonal_(now)
        i, j = divmod(int(loss.argmin()), channels)
        if float(loss[i, j]) >= now - 1e-9:
            break
        order[[i, j]] = order[[j, i]]
    return order


def reordered(model: nn.Module, order: torch.Tensor) -> nn.Module:
    """`model` with conv2's output channels and conv3's input channels in `order`."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.conv2.weight.copy_(model.conv2.weight[order])
        out.conv2.bias.copy_(model.conv2.bias[order])
        out.conv3.weight.copy_(model.conv3.weight[:, order])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    data = load_data("digits")
    plain = train(new_model("cnn", data, seed=0), data, TrainConfig(epochs=20, seed=0))
    test_x = data.tensors("test")[0]
    rows = []
    for i in range(args.keys):
        key = OwnerKey.new("after the fact", nonce=f"{i:032x}", created=CREATED)
        key = key.with_mark(Uchida.plan(plain, key, UchidaConfig(), bits=64))
        scheme = bound_scheme(key, 0)
        weight = plain.conv3.weight.detach().double()
        w = scheme.host(weight).reshape(weight.shape[1], -1)  # (input channels, 3 x 3)
        x = scheme.matrix(w.numel()).double()
        t0 = time.time()
        order = best_order(x, w, scheme.target, args.seconds)
        searched = time.time() - t0
        copy_ = reordered(plain, order)
        with torch.no_grad():
            same = float((copy_(test_x) - plain(test_x)).abs().max())
        before, after = verify(plain, key), verify(copy_, key)
        row = {
            "key": i,
            "search_seconds": round(searched, 2),
            "max_output_change": same,
            "plain": {"verdict": before.verdict, "ber": before.ber, "p": before.p_value},
            "reordered": {"verdict": after.verdict, "ber": after.ber, "p": after.p_value},
        }
        rows.append(row)
        print(row, flush=True)
    body = _markdown(rows, args.seconds, time.time() - start)
    write_results("reorder_copy", {"keys": args.keys, "rows": rows}, body)


def _markdown(rows: list[dict], seconds: float, total: float) -> str:  # type: ignore[type-arg]
    lines = [
        f"digits cnn trained without any mark (seed 0, 20 epochs); {len(rows)} fresh 64-bit "
        f"Uchida keys made for it afterwards (default config and host, conv3); a greedy search "
        f"of at most {seconds:g} s per key over conv3's input-channel order. {total:.0f} s "
        "(1 torch thread).",
        "",
        "| key | plain: verdict, BER, p | reordered copy: verdict, BER, p | search (s) | "
        "largest output change |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["plain"], r["reordered"]
        lines.append(
            f"| {r['key']} | {a['verdict']}, {a['ber']:.3f}, {a['p']:.2g} | {b['verdict']}, "
            f"{b['ber']:.3f}, {b['p']:.2g} | {r['search_seconds']} | "
            f"{r['max_output_change']:.1e} |"
        )
    found = sum(r["reordered"]["verdict"] == "found" for r in rows)
    lines.append(
        f"\nThe reordered copies read as found for {found} of {len(rows)} keys: a verdict is "
        "about the file it read (named by its SHA-256), and a copy made after the key proves "
        "nothing about the model it was made from."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

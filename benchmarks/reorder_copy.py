"""A never-marked model's channels reordered to read a key made before the reordering.

docs/security.md ("Where the proof stops"): channel orders are free, so a copy of a model that
never saw a key, its channels reordered after the key's secrets exist, computes the same
function and reads that key's bits; such a copy proves nothing about the model it was made
from, and a claim needs the accused's own file (which the verdict names by digest).

For each fresh 64-bit key, Uchida's and ST-DM's (the default host, conv3 of the digits cnn,
its 64 input channels free to reorder with conv2's outputs): a greedy search over swaps of the
host's input channels for the order whose reading comes closest to the key's bits, the copy
built (conv2's output channels and bias, conv3's input channels, reordered alike) and checked
to compute the same function, then verified with the key as a file, and the never-marked model
verified realigned to the copy handed in as the "marked reference" (`verify --reference`,
which counts what such a view reads as p 1: a review in session 34 claimed a model this way).

    python benchmarks/reorder_copy.py [--keys 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch import nn

from nnmark import OwnerKey, TrainConfig, load_data, new_model, train, verify
from nnmark.api import bound_scheme
from nnmark.defenses.realign import realign_suspect
from nnmark.io import model_sha256
from nnmark.schemes.stdm import STDM, STDMConfig
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.suspect import ModuleSuspect

from _common import write_results

CREATED = "2026-01-01T00:00:00+00:00"


def best_order(blocks: torch.Tensor, w: torch.Tensor, loss_of, seconds: float):  # type: ignore[no-untyped-def]
    """An order of the host's input channels (`w`: channels x their values) whose projections
    (`blocks`: bits x channels x values, the key's projection per input channel) minimise
    `loss_of` (projections, bits first -> loss per candidate): greedy swaps, every pair scored
    at once, until none helps or `seconds` pass."""
    channels = len(w)
    order = torch.arange(channels)
    start = time.time()
    while time.time() - start < seconds:
        wp = w[order]
        s = torch.einsum("tck,ck->t", blocks, wp)
        # p[t, i, j]: block i's columns against the values now at position j
        p = torch.einsum("tik,jk->tij", blocks, wp)
        own = torch.diagonal(p, dim1=1, dim2=2)  # (t, i): block i against its own values
        swapped = s[:, None, None] + p - own[:, :, None] + p.transpose(1, 2) - own[:, None, :]
        loss = loss_of(swapped)
        now = float(loss_of(s))
        loss.fill_diagonal_(now)
        i, j = divmod(int(loss.argmin()), channels)
        if float(loss[i, j]) >= now - 1e-9:
            break
        order[[i, j]] = order[[j, i]]
    return order


def uchida_reader(scheme, weight: torch.Tensor):  # type: ignore[no-untyped-def]
    """Uchida reads sign(X w), w the filter mean: per input channel, its 3 x 3 values."""
    w = scheme.host(weight).reshape(weight.shape[1], -1)
    x = scheme.matrix(w.numel()).double()
    sign = 2 * scheme.target.double() - 1
    shape = (len(x),) + (1,) * 2

    def loss_of(p: torch.Tensor) -> torch.Tensor:  # a hinge on the signed logits
        return torch.relu(1 - sign.reshape(shape[: p.dim()]) * p).sum(0)

    return x.reshape(len(x), *w.shape), w, loss_of


def stdm_reader(scheme, weight: torch.Tensor):  # type: ignore[no-untyped-def]
    """ST-DM reads each projection's place in its lattice cell: the raw weights, per input
    channel every output's 3 x 3 values; the loss pulls each place to its target bit's point."""
    out, cin = weight.shape[:2]
    x = torch.zeros(len(scheme.target), weight.numel(), dtype=torch.float64)
    x.scatter_(1, scheme.perm, scheme.u.double())
    x = x.reshape(len(x), out, cin, -1).permute(0, 2, 1, 3).reshape(len(x), cin, -1)
    w = weight.permute(1, 0, 2, 3).reshape(cin, -1)
    want = 1 - 2 * scheme.target.double()  # +1: the cell's origin (bit 0), -1: its middle
    dither, step = scheme.dither.double(), scheme.step_size
    shape = (len(want),) + (1,) * 2

    def loss_of(p: torch.Tensor) -> torch.Tensor:
        place = 2 * math.pi * (p - dither.reshape(shape[: p.dim()])) / step
        return -(want.reshape(shape[: p.dim()]) * torch.cos(place)).sum(0)

    return x, w, loss_of


READERS = {
    "uchida": (Uchida, UchidaConfig, uchida_reader),
    "stdm": (STDM, STDMConfig, stdm_reader),
}


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
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    data = load_data("digits")
    plain = train(new_model("cnn", data, seed=0), data, TrainConfig(epochs=20, seed=0))
    test_x = data.tensors("test")[0]
    rows = []
    for name, (cls, config, reader) in READERS.items():
        for i in range(args.keys):
            key = OwnerKey.new("after the fact", nonce=f"{i:032x}", created=CREATED)
            key = key.with_mark(cls.plan(plain, key, config(), bits=64))
            scheme = bound_scheme(key, 0)
            assert scheme.mark.layer == "conv3"  # the layer `reordered` reorders the inputs of
            t0 = time.time()
            order = best_order(*reader(scheme, plain.conv3.weight.detach().double()), args.seconds)
            searched = time.time() - t0
            copy_ = reordered(plain, order)
            with torch.no_grad():
                moved = float((copy_(test_x) - plain(test_x)).abs().max())
            # the never-marked model realigned to the copy, handed in as the "marked
            # reference" (`verify --reference`): a view chosen after the key's secrets; the
            # key's holder commits to it as embed does (stored.marked_sha256)
            if cls.realigns_to_marked:
                key = key.with_stored([0], "marked_sha256", model_sha256(copy_))
                scheme = bound_scheme(key, 0)
            view = realign_suspect(ModuleSuspect(plain), copy_, [scheme], unmarked=False)
            row = {"scheme": name, "key": i, "search_seconds": round(searched, 2)}
            row["max_output_change"] = moved
            for what, v in [
                ("plain", verify(plain, key)),
                ("copy", verify(copy_, key)),
                ("reference", verify(view, key)),
            ]:
                row[what] = {"verdict": v.verdict, "ber": v.ber, "p": v.p_value}
                if "p_as_read" in v.details:
                    row[what]["p_as_read"] = v.details["p_as_read"]
            rows.append(row)
            print(row, flush=True)
    body = _markdown(rows, args.seconds, time.time() - start)
    write_results("reorder_copy", {"keys": args.keys, "rows": rows}, body)


def _markdown(rows: list[dict], seconds: float, total: float) -> str:  # type: ignore[type-arg]
    lines = [
        f"digits cnn trained without any mark (seed 0, 20 epochs); per scheme, fresh 64-bit "
        f"keys made for it afterwards (default config, host conv3); a greedy search of at most "
        f"{seconds:g} s per key over conv3's input-channel order (conv2's outputs reordered "
        f"alike: the same function). {total:.0f} s (1 torch thread).",
        "",
        "- **plain**: the never-marked model verified with the key;",
        "- **copy**: the reordered copy verified as a file;",
        "- **reference**: the never-marked model realigned to the copy handed in as the marked "
        "model (`verify --reference`): what it reads (p as read) counts as p 1; uchida refuses "
        "a marked reference (nothing read: 1).",
        "",
        "| scheme | keys | plain: found | copy: found | copy: p (worst .. best) | "
        "reference: found | reference: p as read (worst .. best) | search s (max) | "
        "largest output change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted({r["scheme"] for r in rows}):
        mine = [r for r in rows if r["scheme"] == name]

        def found(what: str, mine: list[dict] = mine) -> str:  # type: ignore[type-arg]
            return f"{sum(r[what]['verdict'] == 'found' for r in mine)} of {len(mine)}"

        ps = [r["copy"]["p"] for r in mine]
        read = [r["reference"].get("p_as_read", r["reference"]["p"]) for r in mine]
        lines.append(
            f"| {name} | {len(mine)} | {found('plain')} | {found('copy')} | "
            f"{max(ps):.1g} .. {min(ps):.1g} | {found('reference')} | "
            f"{max(read):.1g} .. {min(read):.1g} | "
            f"{max(r['search_seconds'] for r in mine)} | "
            f"{max(r['max_output_change'] for r in mine):.1e} |"
        )
    lines.append(
        "\nA verdict is about the file it read (named by its SHA-256): a copy made after the key "
        "proves nothing about the model it was made from, and a reference handed in after the "
        "key's secrets is a view chosen after them, no evidence (docs/security.md)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

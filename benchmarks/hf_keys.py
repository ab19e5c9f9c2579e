"""Every scheme the Hugging Face Trainer supports, fine-tuned into the tiny ViT over keys.

The runs of tests/integrations/test_hf.py (its ViT, options, groups, Trainer arguments and
DEFAULT_EPOCHS), each with keys of several nonces instead of the test's one: is each mark found,
at what BER and p? newlabel (supported, not claimed on this ViT: the test's NOT_CLAIMED) also
gives the share of its key samples and of its decoys answered with the new label.

    python benchmarks/hf_keys.py [--keys 5] [--only newlabel] \
        [--set newlabel.negatives=64 ... --tag TAG]

`--only NAME` runs only the runs holding that scheme and writes hf_keys_NAME.{json,md};
`--set SCHEME.OPTION=VALUE` changes a scheme's option from the test's (results named with
`--tag`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from nnmark import SCHEMES, OwnerKey, load_data, verify
from nnmark.config import build_config, check_options
from nnmark.errors import NNMarkError
from nnmark.schemes.newlabel import NewLabel
from nnmark.testing.tsa import seen_now

from _common import loopback_stamps, write_results

CREATED = "2026-01-01T00:00:00+00:00"  # fixed: a rerun marks the same models
NONCES = ["4f", "01", "02", "03", "04", "05", "06", "07", "08", "09"]


def _tests() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The integration tests' modules (their conftest, hf_user, test_hf): imported after the
    arguments are read, so that `--help` needs neither pytest nor transformers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integrations"))
    import conftest as integrations  # the tests' scheme options (path set above)
    import hf_user as hf
    import test_hf

    return integrations, hf, test_hf


def runs(test_hf: ModuleType) -> list[tuple[str, ...]]:
    """The test's runs: its groups, then every other supported scheme alone."""
    grouped = {n for g in test_hf.GROUPS for n in g}
    alone = [(n,) for n in test_hf.SUPPORTED if n not in grouped]
    return [*test_hf.GROUPS, *alone]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=5, choices=range(1, len(NONCES) + 1))
    ap.add_argument("--only", help="only the runs holding this scheme (default: every run)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SCHEME.OPTION=VALUE",
        help="a scheme option instead of the test's (repeatable)",
    )
    ap.add_argument("--tag", help="suffix of the results' name (with --set)")
    args = ap.parse_args()
    changed: dict[str, dict[str, str]] = {}
    for item in args.set:
        target, sep, value = item.partition("=")
        name, dot, option = target.partition(".")
        if not (sep and dot and name and option):
            ap.error(f"--set {item}: expected SCHEME.OPTION=VALUE")
        changed.setdefault(name, {})[option] = value
    if changed and not args.tag:
        ap.error("--set needs --tag (the results must not replace the test's own)")
    integrations, hf, test_hf = _tests()
    chosen = [g for g in runs(test_hf) if args.only is None or args.only in g]
    if not chosen:
        ap.error(f"--only {args.only}: no run of tests/integrations/test_hf.py holds it")
    for name, options in changed.items():  # before any training: a typo is no result
        if not any(name in g for g in chosen):
            ap.error(f"--set {name}.*: no chosen run holds {name}")
        try:
            check_options(SCHEMES.get(name).Config, options)
        except NNMarkError as exc:
            ap.error(f"--set {name}.*: {exc}")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    hf.quiet()
    digits = load_data("digits")
    key_data = [digits, load_data(integrations.SCHEME_OPTIONS["unrelated"]["source"])]
    x, y = digits.tensors("train")
    stamp, certs = loopback_stamps()
    start = time.time()
    plain = hf.tiny_vit()
    hf.transformers.Trainer(
        model=plain, args=hf.args(Path(tempfile.mkdtemp()), 5), train_dataset=hf.Images(x, y)
    ).train()
    plain.eval()
    rows = []
    for nonce in NONCES[: args.keys]:
        for group in chosen:
            model = copy.deepcopy(plain)
            keys = {}
            for name in group:
                cls = SCHEMES.get(name)
                options = {**integrations.SCHEME_OPTIONS.get(name, {})}
                options.update(test_hf.VIT_OPTIONS.get(name, {}))
                options.update(changed.get(name, {}))
                bits = test_hf.BITS.get(name, 64) if cls.kind == "whitebox" else None
                key = OwnerKey.new("hf owner", nonce=nonce * 16, created=CREATED)
                on = hf.Logits(model) if cls.kind == "blackbox" else model
                key = key.with_mark(
                    cls.plan(on, key, build_config(cls.Config, options), bits=bits, data=digits)
                )
                keys[name] = stamp(key) if name in test_hf.STAMPED else key
            trainer = hf.WatermarkTrainer(
                model=model,
                args=hf.args(Path(tempfile.mkdtemp()), test_hf.DEFAULT_EPOCHS),
                train_dataset=hf.Images(x, y),
                schemes=[SCHEMES.get(n)(keys[n].marks[0], key_data) for n in group],
            )
            trainer.train()
            model.eval()
            for name in group:
                v = verify(
                    hf.HFSuspect(model),
                    keys[name],
                    data=key_data,
                    tsa_certs=certs,
                    suspect_seen=seen_now(),
                )
                row = {
                    "key": nonce,
                    "scheme": name,
                    "run": "+".join(group),
                    "verdict": v.verdict,
                    "ber": v.ber,
                    "p": v.p_value,
                }
                if name == "newlabel":
                    row.update(_newlabel_rates(hf, model, keys[name], key_data, digits))
                rows.append(row)
                print(row, flush=True)
    write_results(
        "hf_keys" + (f"_{args.only}" if args.only else "") + (f"_{args.tag}" if args.tag else ""),
        {"rows": rows, "set": args.set},
        _markdown(rows, args.keys, test_hf.DEFAULT_EPOCHS, time.time() - start, args.set),
    )


def _newlabel_rates(hf, model, key, key_data, digits) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The share of newlabel's key samples and of its decoys answered with the new label, and
    the test accuracy."""
    scheme = NewLabel(key.marks[0], key_data)
    logits = hf.Logits(model)
    new = digits.num_classes
    xt, yt = digits.tensors("test")
    with torch.no_grad():
        return {
            "key_samples": float((logits(scheme.x).argmax(1) == new).float().mean()),
            "decoys": float((logits(scheme.decoys()).argmax(1) == new).float().mean()),
            "accuracy": float((logits(xt).argmax(1) == yt).float().mean()),
        }


def _markdown(  # type: ignore[type-arg]
    rows: list[dict], keys: int, epochs: int, seconds: float, sets: list[str]
) -> str:
    changed = f" Options changed from the test's: `{' '.join(sets)}`." if sets else ""
    lines = [
        f"The tiny ViT of tests/integrations/test_hf.py on digits (5 plain epochs), each run "
        f"fine-tuned {epochs} epochs with `WatermarkTrainer` at the test's "
        f"arguments (`hf_user.args`: Adam, lr 1e-2, the Trainer's default linear decay); keys of "
        f"{keys} nonces; frontier's stamped (loopback TSA). {seconds:.0f} s (1 torch thread)."
        + changed,
        "",
        "| scheme | run | found | worst BER | worst p | newlabel: key samples / decoys |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted({r["scheme"] for r in rows}):
        mine = [r for r in rows if r["scheme"] == name]
        found = sum(r["verdict"] in ("found", "intact") for r in mine)
        bers = [r["ber"] for r in mine if r["ber"] is not None]
        rates = ""
        if name == "newlabel":
            ks, ds = [r["key_samples"] for r in mine], [r["decoys"] for r in mine]
            rates = f"{min(ks):.2f} to {max(ks):.2f} / {min(ds):.2f} to {max(ds):.2f}"
        lines.append(
            f"| {name} | {mine[0]['run']} | {found}/{len(mine)} | "
            f"{max(bers) if bers else '-'} | {max(r['p'] for r in mine):.1e} | {rates} |"
        )
    lines += ["", "found: verdict found (fragile: intact)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

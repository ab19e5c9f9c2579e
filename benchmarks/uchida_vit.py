"""Uchida at its default lam on the tiny Hugging Face ViT of tests/integrations/test_hf.py.

Session 28 gave the ViT tests `lam=0.5` (the default is 0.05) on the view that HF's small init
std (0.02) leaves the default too weak a pull. Two measurements:

- Hosts: the digits zoo's default hosts (cnn, mlp, resnet20; 64 bits) and the ViT's MLP output
  projection (48 bits), at initialisation and the ViT after 5 plain epochs: the host weight's
  std, the host vector's (its filter mean), the median |logit| a random key reads there, and
  on the host weight the rms of the task loss's gradient (10 batches of 64) against the rms of
  the default penalty's (lam 0.05).
- Runs over keys (created fixed; the first nonce is the tests'): the ViT trained from scratch
  with `WatermarkTrainer` (test_vit_trained_with_watermark_trainer_carries_the_mark) at the
  tests' lam 0.5 for 3 epochs, and at the default lam for 3 and 20 (TrainConfig().epochs)
  epochs; fine-tuned into the plain ViT (5 plain epochs; the fine-tune-to-embed test's run,
  alone rather than grouped) for 20 epochs at the default lam and at 0.5. Per setting: keys
  with a wrong bit, keys not found, the smallest signed logit and margin (the logit in units
  of its spread, UchidaConfig) over keys, the host std and the test accuracy.

    python benchmarks/uchida_vit.py [--keys 20]
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
from typing import Any

import torch
import torch.nn.functional as F

from nnmark import OwnerKey, load_data, new_model, verify
from nnmark.layers import default_host_layer, host_vector
from nnmark.schemes.uchida import DEFAULT_LAM, Uchida, UchidaConfig
from nnmark.testing.tsa import seen_now

from _common import write_results

CREATED = "2026-01-01T00:00:00+00:00"  # the tests' (tests/conftest.py patches the clock to it)
FIRST_NONCE = "4f"  # the tests' key
VIT_HOST = "vit.layers.0.mlp.fc2"
VIT_BITS = 48
#: (label, from scratch?, lam or None for the default, epochs)
SETTINGS = [
    ("from scratch, lam 0.5, 3 epochs (the test until now)", True, 0.5, 3),
    ("from scratch, default lam, 3 epochs", True, None, 3),
    ("from scratch, default lam, 20 epochs", True, None, 20),
    ("fine-tuned, default lam, 20 epochs", False, None, 20),
    ("fine-tuned, lam 0.5, 20 epochs (the test until now)", False, 0.5, 20),
]


def _hf() -> ModuleType:
    """The tests' transformers side (hf_user.py), imported after the arguments are read."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integrations"))
    import hf_user

    return hf_user


def _key(nonce: str) -> OwnerKey:
    return OwnerKey.new("hf owner", nonce=nonce * 16, created=CREATED)


def host_row(name: str, model: torch.nn.Module, layer: str, bits: int, loss, x, y) -> dict:  # type: ignore[no-untyped-def,type-arg]
    scheme = Uchida(Uchida.plan(model, _key(FIRST_NONCE), UchidaConfig(layer=layer), bits=bits))
    w = scheme.host_weight(model)
    model.train()
    task = torch.stack(
        [
            torch.autograd.grad(loss(model, x[i : i + 64], y[i : i + 64]), w)[0]
            for i in range(0, 640, 64)
        ]
    )
    pull = torch.autograd.grad(scheme.penalty(model, (x, y)), w)[0]
    model.eval()
    rms = lambda t: float(t.pow(2).mean().sqrt())  # noqa: E731
    return {
        "host": name,
        "layer": layer,
        "shape": list(w.shape),
        "bits": bits,
        "weight_std": float(w.std()),
        "host_std": float(host_vector(w.detach()).std()),
        "median_abs_logit": float(scheme.logits(w.detach()).abs().median()),
        "task_grad_rms": rms(task),
        "penalty_grad_rms": rms(pull),
        "ratio": rms(pull) / rms(task),
    }


def run(hf: ModuleType, plain, digits, nonce: str, scratch: bool, lam, epochs: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    x, y = digits.tensors("train")
    model = hf.tiny_vit() if scratch else copy.deepcopy(plain)
    key = _key(nonce).with_module(model)
    mark = Uchida.plan(model, key, UchidaConfig(layer=VIT_HOST, lam=lam), bits=VIT_BITS)
    key = key.with_mark(mark)
    scheme = Uchida(mark)
    hf.WatermarkTrainer(
        model=model,
        args=hf.args(Path(tempfile.mkdtemp()), epochs),
        train_dataset=hf.Images(x, y),
        schemes=[scheme],
    ).train()
    model.eval()
    v = verify(model, key, suspect_seen=seen_now())
    xt, yt = digits.tensors("test")
    with torch.no_grad():
        w = scheme.host_weight(model)
        signed = (2 * scheme.target.float() - 1) * scheme.logits(w)
        acc = float((model(pixel_values=xt).logits.argmax(1) == yt).float().mean())
        return {
            "key": nonce,
            "verdict": v.verdict,
            "ber": v.ber,
            "p": v.p_value,
            "min_signed_logit": float(signed.min()),
            "min_margin": float(scheme.margins(w).min()),
            "host_std": float(host_vector(w).std()),
            "accuracy": acc,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20, choices=range(1, 201))
    args = ap.parse_args()
    hf = _hf()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    hf.quiet()
    start = time.time()
    digits = load_data("digits")
    x, y = digits.tensors("train")
    ce = lambda m, a, b: F.cross_entropy(m(a), b)  # noqa: E731
    vit_loss = lambda m, a, b: m(pixel_values=a, labels=b).loss  # noqa: E731
    hosts = []
    for arch in ("cnn", "mlp", "resnet20"):
        model = new_model(arch, digits, seed=0)
        hosts.append(host_row(f"{arch}, init", model, default_host_layer(model), 64, ce, x, y))
    plain = hf.tiny_vit()
    hosts.append(host_row("ViT, init", plain, VIT_HOST, VIT_BITS, vit_loss, x, y))
    hf.transformers.Trainer(
        model=plain, args=hf.args(Path(tempfile.mkdtemp()), 5), train_dataset=hf.Images(x, y)
    ).train()
    plain.eval()
    hosts.append(host_row("ViT, 5 plain epochs", plain, VIT_HOST, VIT_BITS, vit_loss, x, y))
    for h in hosts:
        print(h, flush=True)
    nonces = [FIRST_NONCE] + [f"{i:02x}" for i in range(args.keys) if f"{i:02x}" != FIRST_NONCE]
    settings = []
    for label, scratch, lam, epochs in SETTINGS:
        rows = [run(hf, plain, digits, n, scratch, lam, epochs) for n in nonces[: args.keys]]
        settings.append({"setting": label, "lam": lam or DEFAULT_LAM["bce"], "rows": rows})
        print(label, summary(rows), flush=True)
    write_results(
        "uchida_vit",
        {"hosts": hosts, "settings": settings},
        _markdown(hosts, settings, args.keys, time.time() - start),
    )


def summary(rows: list[dict]) -> dict[str, Any]:  # type: ignore[type-arg]
    return {
        "wrong": sum(r["ber"] > 0 for r in rows),
        "not_found": sum(r["verdict"] != "found" for r in rows),
        "min_signed_logit": min(r["min_signed_logit"] for r in rows),
        "min_margin": min(r["min_margin"] for r in rows),
        "host_std": (min(r["host_std"] for r in rows), max(r["host_std"] for r in rows)),
        "accuracy": (min(r["accuracy"] for r in rows), max(r["accuracy"] for r in rows)),
        "first_key": rows[0],
    }


def _markdown(hosts: list[dict], settings: list[dict], keys: int, seconds: float) -> str:  # type: ignore[type-arg]
    lines = [
        "Uchida's host on the digits zoo (default host layer, 64 bits) and on the tiny ViT of "
        f"tests/integrations/test_hf.py ({VIT_HOST}, {VIT_BITS} bits), then the ViT marked with "
        f"`WatermarkTrainer` (`hf_user.args`: Adam, lr 1e-2, linear decay) over {keys} keys "
        f"(nonce {FIRST_NONCE}, the tests', first). {seconds:.0f} s (1 torch thread).",
        "",
        "## Hosts (default penalty, lam 0.05)",
        "",
        "| host | layer | weight std | host vector std | median abs logit | task grad rms "
        "| penalty grad rms | penalty / task |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in hosts:
        lines.append(
            f"| {h['host']} | {h['layer']} {tuple(h['shape'])} | {h['weight_std']:.4f} | "
            f"{h['host_std']:.5f} | {h['median_abs_logit']:.3f} | {h['task_grad_rms']:.5f} | "
            f"{h['penalty_grad_rms']:.5f} | {h['ratio']:.2f} |"
        )
    lines += [
        "",
        "Task gradient: cross-entropy on 10 training batches of 64, rms over batches and "
        "weights; penalty: lam 0.05 x the summed BCE (the default), rms over weights.",
        "",
        "## Runs",
        "",
        "| setting | keys with a wrong bit | not found | smallest signed logit | smallest margin "
        "| host std | accuracy | the tests' key: BER, smallest signed logit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in settings:
        m = summary(s["rows"])
        first = m["first_key"]
        lines.append(
            f"| {s['setting']} | {m['wrong']}/{len(s['rows'])} | {m['not_found']} | "
            f"{m['min_signed_logit']:.2f} | {m['min_margin']:.2f} | "
            f"{m['host_std'][0]:.3f} to {m['host_std'][1]:.3f} | "
            f"{m['accuracy'][0]:.3f} to {m['accuracy'][1]:.3f} | "
            f"{first['ber']:.3f}, {first['min_signed_logit']:.2f} |"
        )
    lines += [
        "",
        "Signed logit: (2 b_j - 1) x_j.w on the marked host (negative: a wrong bit); margin: "
        "the same in units of its spread, x_j.w / (|x_j| rms(w)) (UchidaConfig). Smallest: "
        "over bits and keys. Fine-tuned: into the ViT after 5 plain epochs, alone (the test "
        "groups uchida with actsign, deepsigns and fragile: benchmarks/hf_keys.py).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Calibration of every registered scheme: false claims on >= 100 unmarked digits models.

Issue 7 asks, for every scheme (white-box too), over >= 100 unmarked digits models: 0 false
claims at the default alpha (1e-6), and a false-positive rate at alpha = 0.05 at or below 0.05
within its binomial confidence interval; issue 6 asks the latter over >= 50 unmarked models for
every black-box scheme, and `nnmark calibrate` exists to fix trigger sets whose chance rate is
not 1/C.

Protocol (digits, the `cnn` of the zoo, the quick preset's recipe and scheme options):

* one marked model per registered scheme, and the quick preset's composite, trained with
  seed 0 by the benchmark's own cached trainer (`nnmark.bench.models.train_model_timed`): its key is
  the key under test (trigger-set keys hold triggers drawn from the owner's data);
* `--models` unmarked models, the same recipe, seeds 2000, 2001, ...: the false claims are
  counted on these;
* `--calibration-models` more, seeds 3000, ...: what `nnmark calibrate` measures
  (`nnmark.calibrate.calibrate`) for the calibrated key, disjoint from the models it is judged
  on (calibrating on the models it is then tested on would flatter it);
* every unmarked model is verified against every key at alpha = 1e-6 and, separately, at
  alpha = 0.05 (a trigger-set test may stop early at one of its looks, so the verdict at one
  alpha is not read off the p-value of the other), with the key as issued and, for black-box
  marks, with the calibrated key (calibration changes only a trigger set's p0);
* FPR = false claims / models with its exact 95 % Clopper-Pearson interval; the requirement
  holds when there are 0 false claims at 1e-6 and the interval's lower end is <= 0.05.

A scheme that cannot mark the digits CNN (a segmentation scheme such as `segtrigger`) is
skipped with its own plan()'s reason (`nnmark.bench.jobs.unsupported`): its unmarked
population is U-Nets, judged by benchmarks/calibration_seg.py. Models are cached under `--cache` (default
runs/calibration, ignored by git) by content hash: a rerun trains only what is new, such as the
model of a scheme registered since.

    .venv/bin/python benchmarks/calibration.py [--models 100] [--calibration-models 20]
        [--epochs 10] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from nnmark.bench import PRESETS, Task
from nnmark.bench.executors import Workers
from nnmark.bench.jobs import ModelJob, unsupported
from nnmark.bench.models import train_model_timed
from nnmark.bench.store import ResultStore
from nnmark.schemes import SCHEMES
from nnmark.stats import DEFAULT_ALPHA, clopper_pearson

from _common import RESULTS, write_results

LOOSE_ALPHA = 0.05
UNMARKED_SEED, CALIBRATION_SEED = 2000, 3000


def verify_key(
    root: Path, key_ident: str, unmarked: list[str], calibration: list[str]
) -> dict[str, Any]:
    """Every unmarked model against one key (as issued, and calibrated for black-box marks)."""
    from nnmark.api import verify as verify_with
    from nnmark.calibrate import calibrate as calibrate_with
    from nnmark.data import SHARED_DATA, load_data
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey

    # the data sets the keys re-derive inputs from: digits, and unrelated's source (its key
    # names it by content hash, never by path: the verifier passes it)
    digits, fashion = (
        load_data("digits"),
        load_data(f"fashion-mnist:{SHARED_DATA / 'fashion-mnist'}"),
    )

    def verify(model: Any, key: Any, alpha: float = DEFAULT_ALPHA) -> Any:
        return verify_with(model, key, alpha, data=[digits, fashion])

    def calibrate(key: Any, models: Any) -> Any:
        return calibrate_with(key, models, data=digits, key_data=[fashion])

    torch.set_num_threads(1)
    cpu0 = time.process_time()
    store = ResultStore(root)
    key = OwnerKey.load(store.cache.key_path(key_ident))
    marked, _ = load_model(store.cache.model_path(key_ident))
    models = [load_model(store.cache.model_path(i))[0] for i in unmarked]
    keys = {"issued": key}
    if any(SCHEMES.get(m.scheme).kind == "blackbox" for m in key.marks):
        keys["calibrated"] = calibrate(
            key, [load_model(store.cache.model_path(i))[0] for i in calibration]
        )
    issued = verify(marked, key)
    out: dict[str, Any] = {"marked": _record(issued, verify(marked, key, LOOSE_ALPHA))}
    # A key its scheme will not test as issued (e.g. one that needs a calibration first) says so.
    out["issued_reason"] = issued.reason or next((p.reason for p in issued.parts if p.reason), None)
    for name, k in keys.items():
        out[name] = [_record(verify(m, k), verify(m, k, LOOSE_ALPHA)) for m in models]
        if name == "calibrated":
            v = verify(marked, k)  # the owner's claim must survive the calibration
            out["marked_calibrated_p"] = v.p_value
            out["p0"] = [x.details["p0"] for x in (v.parts or (v,)) if "p0" in x.details]
            out["p0_null"] = [x.null for x in (v.parts or (v,)) if "p0" in x.details]
            entries = k.derived["calibration"].values()
            out["calibration_rate"] = [
                {f: e[f] for f in ("k", "n", "ucb", "model_ucb") if f in e}
                for e in entries
                if "ucb" in e
            ]
    out["cpu_seconds"] = round(time.process_time() - cpu0, 2)
    return out


def _record(strict: Any, loose: Any) -> dict[str, Any]:
    return {
        "statistic": strict.statistic,
        "p": strict.p_value,
        "claim": strict.verdict in ("found", "intact"),
        "p_loose": loose.p_value,
        # p <= 0.05, not a verdict: a claim also needs p below the search-cost bound (about
        # 1.6e-12) at any alpha since session 29, so counting claims at 0.05 tested nothing
        "claim_loose": loose.p_value <= LOOSE_ALPHA,
        "queries": strict.queries,
    }


def accuracies(root: Path, idents: list[str]) -> list[float]:
    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.tasks import evaluate

    torch.set_num_threads(1)
    data = load_data("digits")
    test = data.loader("test", 512)
    store = ResultStore(root)
    return [
        evaluate(load_model(store.cache.model_path(i))[0], test, "classification")["accuracy"]
        for i in idents
    ]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    strict = sum(r["claim"] for r in records)
    loose = sum(r["claim_loose"] for r in records)
    lo, hi = clopper_pearson(loose, n)
    return {
        "models": n,
        "false_claims_default_alpha": strict,
        "false_claims_0.05": loose,
        "fpr_0.05": loose / n,
        "fpr_0.05_ci95": [lo, hi],
        "min_p": min(r["p"] for r in records),
        "meets": strict == 0 and lo <= LOOSE_ALPHA,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [s for s, r in results.items() if "issued" in r]
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, s in zip(axes.flat, names, strict=False):
        r = results[s]
        ps = [x["p"] for x in r["records"]["issued"]]
        ax.hist(ps, bins=bins, color="steelblue", label="key as issued")
        if "calibrated" in r["records"]:
            cal = [x["p"] for x in r["records"]["calibrated"]]
            ax.hist(cal, bins=bins, histtype="step", color="darkorange", lw=1.5, label="calibrated")
        ax.axhline(len(ps) / 20, color="grey", ls="--", lw=0.8)
        ax.axvline(LOOSE_ALPHA, color="red", lw=0.8)
        iss = r["issued"]
        ax.set_title(
            f"{s} ({r['kind']}): FPR@0.05 {iss['fpr_0.05']:.2f}\n"
            f"claims@1e-6 {iss['false_claims_default_alpha']}, min p {iss['min_p']:.1e}",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
        ax.set_xlabel("p-value of an unmarked model", fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles = [h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]]
    labels = [lb for ax in axes.flat for lb in ax.get_legend_handles_labels()[1]]
    uniq = dict(zip(labels, handles, strict=True))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=2, fontsize=8)
    n = results[names[0]]["issued"]["models"] if names else 0
    fig.suptitle(
        f"p-values of {n} unmarked digits CNNs verified with each scheme's key (grey dashed: a "
        "uniform null's count per bin; red: alpha = 0.05)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(doc: dict[str, Any]) -> str:
    p = doc["protocol"]
    lines = [
        f"Unmarked models: {p['models']} digits `cnn`s, {p['epochs']} epochs (seeds "
        f"{UNMARKED_SEED}..{UNMARKED_SEED + p['models'] - 1}), test accuracy mean "
        f"{p['unmarked_accuracy_mean']:.4f} (min {p['unmarked_accuracy_min']:.4f}); keys from one "
        f"marked model per scheme (seed 0, the quick preset's options). Calibrated keys: "
        f"`nnmark calibrate` on {p['calibration_models']} other unmarked models (seeds "
        f"{CALIBRATION_SEED}..), disjoint from the {p['models']} judged. False claim: verdict "
        f"found (intact) on an unmarked model. FPR at 0.05: the share of unmarked models whose p "
        f"(at alpha 0.05) is at most 0.05, with its exact 95 % Clopper-Pearson interval (not their "
        f"claims: a claim also needs p below the search-cost bound at any alpha); 'meets' = 0 "
        f"false claims at alpha = {DEFAULT_ALPHA:g} and the interval's lower end <= 0.05.",
        "",
        "| scheme | kind | marked model p | models | false claims at 1e-6 | p <= 0.05 "
        "| FPR at 0.05 [95 % CI] | min p | meets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cal_lines = []
    for s, r in doc["schemes"].items():
        if "skipped" in r or "error" in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['error']}"
            lines.append(f"| {s} | {r['kind']} | {why} | | | | | | |")
            continue
        i = r["issued"]
        ci = i["fpr_0.05_ci95"]
        lines.append(
            f"| {s} | {r['kind']} | {r['marked']['p']:.1e} | {i['models']} | "
            f"{i['false_claims_default_alpha']} | {i['false_claims_0.05']} | {i['fpr_0.05']:.3f} "
            f"[{ci[0]:.3f}, {ci[1]:.3f}] | {i['min_p']:.2e} | {'yes' if i['meets'] else 'NO'} |"
        )
        if "calibrated" in r:
            c = r["calibrated"]
            cc = c["fpr_0.05_ci95"]
            rates = ", ".join(
                f"{e['k']}/{e['n']} (bound {e['ucb']:.4f}"
                + (f"; one model's bound {e['model_ucb']:.4f}" if "model_ucb" in e else "")
                + ")"
                for e in r["calibration_rate"]
            )
            judged = [x["statistic"] for x in r["records"]["issued"]]
            mean_rate = "" if r["kind"] == "composite" else f"{sum(judged) / len(judged):.4f}"
            cal_lines.append(
                f"| {s} | {rates} | {mean_rate} | "
                f"{', '.join(f'{x:.4f}' for x in r['p0'])} | {i['fpr_0.05']:.3f} | "
                f"{c['false_claims_default_alpha']} | {c['fpr_0.05']:.3f} [{cc[0]:.3f}, "
                f"{cc[1]:.3f}] | {c['min_p']:.2e} | {r['marked_calibrated_p']:.1e} | "
                f"{'yes' if c['meets'] else 'NO'} |"
            )
    if cal_lines:
        lines += [
            "",
            "## Black-box keys after `nnmark calibrate`",
            "",
            "p0 is what the scheme's calibrated verification uses (nnmark.schemes._trigger; its "
            "own words for each key are listed below the table). The rate columns: key-label "
            "answers / trigger queries over the calibration models with their upper 95 % "
            "bounds, and the mean trigger accuracy of the judged models under the key as issued.",
            "",
            "| scheme | calibration models' rate | judged models' mean rate | p0 calibrated | FPR "
            "at 0.05 as issued | false claims at 1e-6 | FPR at 0.05 calibrated [95 % CI] | "
            "min p | marked model p (calibrated) | meets |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *cal_lines,
        ]
    notes = [f"- {s}: {r['p0_null'][0]}" for s, r in doc["schemes"].items() if r.get("p0_null")]
    if notes:
        lines += ["", "The calibrated null of each key, as its verdict states it:", "", *notes]
    refused = [
        f"- {s}: {r['issued_reason']}" for s, r in doc["schemes"].items() if r.get("issued_reason")
    ]
    if refused:
        lines += [
            "",
            "Keys whose scheme does not claim on its own marked model as issued (so their "
            "as-issued false claims say little), with the verdict's reason:",
            "",
            *refused,
        ]
    lines += [
        "",
        "![calibration histogram](calibration.png)",
        "",
        f"CPU: {doc['cpu_seconds']['train']:.0f} s training ({doc['trained_now']} models trained "
        f"in this run, the rest from the cache), {doc['cpu_seconds']['verify']:.0f} s verifying; "
        f"{doc['seconds']:.0f} s wall, load average at start {doc['load_average']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100, help="unmarked models judged")
    ap.add_argument("--calibration-models", type=int, default=20, help="for nnmark calibrate")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (1 torch thread each)")
    ap.add_argument("--cache", type=Path, default=Path("runs/calibration"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    start, load = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    quick = PRESETS["quick"]
    task = Task(data="digits", arch="cnn", epochs=args.epochs)
    ResultStore(args.cache).create()

    schemes: dict[str, dict[str, Any]] = {}
    jobs: dict[str, ModelJob] = {}
    for name in [*quick.resolved_schemes(), *quick.resolved_composites()]:
        parts = name.split("+")
        opts = (
            {p: dict(quick.scheme_options.get(p, {})) for p in parts}
            if len(parts) > 1
            else dict(quick.scheme_options.get(name, {}))
        )
        kind = "composite" if len(parts) > 1 else SCHEMES.get(name).kind
        job = ModelJob(task, name, quick.seed, opts)
        cached = ResultStore(args.cache).cache.has(job.ident, keyed=True)
        why = None if cached else unsupported(task, name, opts)
        schemes[name] = {"kind": kind} | ({"skipped": why} if why else {})
        if not why:
            jobs[name] = job
    unmarked = [ModelJob(task, "none", UNMARKED_SEED + i, {}) for i in range(args.models)]
    calib = [
        ModelJob(task, "none", CALIBRATION_SEED + i, {}) for i in range(args.calibration_models)
    ]

    everything = [*jobs.values(), *unmarked, *calib]
    train_cpu, trained = 0.0, 0
    t0 = time.process_time()
    with Workers(args.jobs, None) as workers:
        calls = [(args.cache, j) for j in everything]
        for n, (i, res, err) in enumerate(workers.map_unordered(train_model_timed, calls), 1):
            if err is not None:
                raise SystemExit(
                    f"training {everything[i].scheme} seed {everything[i].seed}: {err}"
                )
            trained += res[1]
            train_cpu += res[2]
            if n % 10 == 0 or n == len(calls):
                print(f"models {n}/{len(calls)} ({trained} trained)", flush=True)
        if workers.in_process:
            train_cpu = time.process_time() - t0

        t1 = time.process_time()
        un_ids = [j.ident for j in unmarked]
        cal_ids = [j.ident for j in calib]
        acc = accuracies(args.cache, un_ids)
        names = list(jobs)
        calls2 = [(args.cache, jobs[s].ident, un_ids, cal_ids) for s in names]
        verify_cpu = 0.0
        for i, res, err in workers.map_unordered(verify_key, calls2):
            s = names[i]
            if err is not None:
                schemes[s]["error"] = f"{type(err).__name__}: {err}"
                print(f"{s}: {schemes[s]['error']}", flush=True)
                continue
            verify_cpu += res["cpu_seconds"]
            r = schemes[s]
            r["marked"] = res["marked"]
            r["issued_reason"] = res["issued_reason"]
            r["records"] = {"issued": res["issued"]}
            r["issued"] = summarise(res["issued"])
            if "calibrated" in res:
                r["records"]["calibrated"] = res["calibrated"]
                r["calibrated"] = summarise(res["calibrated"])
                r["p0"] = res["p0"]
                r["marked_calibrated_p"] = res["marked_calibrated_p"]
                r["calibration_rate"] = res["calibration_rate"]
                r["p0_null"] = res["p0_null"]
            print(s, r["issued"], r.get("calibrated", ""), flush=True)
        if workers.in_process:
            verify_cpu = time.process_time() - t1

    plot(schemes, RESULTS / "calibration.png")
    doc = {
        "protocol": {
            "data": "digits",
            "arch": "cnn",
            "epochs": args.epochs,
            "models": args.models,
            "unmarked_seeds": [UNMARKED_SEED, UNMARKED_SEED + args.models - 1],
            "calibration_models": args.calibration_models,
            "calibration_seeds": [CALIBRATION_SEED, CALIBRATION_SEED + args.calibration_models - 1],
            "alphas": [DEFAULT_ALPHA, LOOSE_ALPHA],
            "scheme_options": quick.scheme_options,
            "unmarked_accuracy_mean": sum(acc) / len(acc),
            "unmarked_accuracy_min": min(acc),
            "jobs": args.jobs,
        },
        "schemes": schemes,
        "trained_now": trained,
        "cpu_seconds": {"train": round(train_cpu, 1), "verify": round(verify_cpu, 1)},
        "seconds": round(time.perf_counter() - start, 1),
        "load_average": load,
        "figure": "benchmarks/results/calibration.png",
    }
    write_results("calibration", doc, markdown(doc))
    print(json.dumps({s: r.get("issued", r.get("skipped")) for s, r in schemes.items()}, indent=1))


if __name__ == "__main__":
    main()

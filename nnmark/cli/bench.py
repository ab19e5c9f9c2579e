"""`nnmark bench` (a resumable grid, failures recorded) and `nnmark report` (HTML + Markdown)."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nnmark.cli.common import (
    ForceOpt,
    check_output,
    command,
    distinct_paths,
    err,
    out,
    pick_device,
    read_certs,
)
from nnmark.errors import NNMarkError

if TYPE_CHECKING:
    from nnmark.bench.models import Notary


@contextlib.contextmanager
def _notary(url: str | None, cert: Path | None) -> Iterator[Notary | None]:
    """The bench's TSA: none, a URL with its CA certificate, or a loopback one for the run."""
    from nnmark.bench.models import Notary

    if url is None:
        if cert is not None:
            raise NNMarkError("--tsa-cert needs --tsa URL")
        yield None
    elif url == "loopback":
        from nnmark.testing.tsa import LoopbackTSA

        with LoopbackTSA() as authority:
            yield Notary(authority.url, authority.ca_cert_pem)
    else:
        if cert is None:
            raise NNMarkError("--tsa URL needs --tsa-cert CA.pem (the certificate to trust)")
        yield Notary(url, read_certs([cert])[0])


@command("bench")
def bench_cmd(
    preset: Annotated[
        str | None,
        typer.Option(
            help="A shipped grid: quick (digits, every scheme x attack), "
            "seeds (MNIST + BBBC039, the seeds' settings) or cifar (CIFAR-10 WRN + ResNet-32, "
            "seeds 002 and 003; needs the data, best on GPUs)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A YAML grid (fields: docs/bench.md)")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Results directory; rerunning into it resumes")
    ] = Path("bench-results"),
    jobs: Annotated[int, typer.Option(help="Parallel worker processes (or Ray CPUs)")] = 2,
    ray: Annotated[
        str | None,
        typer.Option(help="Run on Ray: 'auto' joins a cluster, ADDRESS one, 'local' starts one"),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Rerun the cells that failed last time")
    ] = False,
    schemes: Annotated[
        list[str] | None, typer.Option("--scheme", help="Only this scheme (repeatable)")
    ] = None,
    attacks: Annotated[
        list[str] | None, typer.Option("--attack", help="Only this attack (repeatable)")
    ] = None,
    false_claims: Annotated[
        bool,
        typer.Option(
            "--false-claims",
            help="Also run the key-marginal false-claim check (many keys x 30 never-marked "
            "models of 3 architectures and 2 recipes; nnmark.bench.false_claims) into --out",
        ),
    ] = False,
    tsa: Annotated[
        str | None,
        typer.Option(
            help="Timestamp every key with this RFC 3161 TSA (URL; with --tsa-cert) before "
            "verifying, as owners would; 'loopback' starts a local one (needs openssl)",
        ),
    ] = None,
    tsa_cert: Annotated[
        Path | None, typer.Option("--tsa-cert", help="The CA certificate (PEM) of --tsa URL")
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="Where models train and cells run: cpu (the default, as the committed "
            "results), auto, cuda (each worker process owns one GPU, in turn), cuda:N or mps",
        ),
    ] = "cpu",
) -> None:
    """Run tasks x schemes x attacks x strengths; a failed cell is recorded, never fatal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from nnmark.bench import PRESETS, load_spec, run_bench
    from nnmark.bench.executors import check_jobs

    if (preset is None) == (config is None):
        raise NNMarkError("give exactly one of --preset NAME or --config FILE")
    check_jobs(jobs, ray)
    if out_dir.exists() and not out_dir.is_dir():
        raise NNMarkError(f"--out {out_dir} is not a directory (results are a folder of files)")
    if ray is None:
        pick_device(device)  # run_bench checks it again; here before a loopback TSA starts
    if preset is not None:
        if preset not in PRESETS:
            raise NNMarkError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        spec = PRESETS[preset]
    else:
        assert config is not None
        spec = load_spec(config)
    if schemes:
        spec = dataclasses.replace(spec, schemes=tuple(schemes))
    if attacks:
        spec = dataclasses.replace(spec, attacks=tuple(attacks))
    spec.resolved_schemes(), spec.resolved_attacks(), spec.resolved_composites()  # fail early
    spec.check_options()
    # The command as parsed (not sys.argv: the same under a test runner or `python -m`).
    words = ["nnmark", "bench"]
    words += ["--preset", preset] if preset else ["--config", str(config)]
    words += ["--out", str(out_dir), "--jobs", str(jobs)] + (["--ray", ray] if ray else [])
    words += ["--retry-failed"] if retry_failed else []
    words += [w for s in schemes or [] for w in ("--scheme", s)]
    words += [w for a in attacks or [] for w in ("--attack", a)]
    words += ["--false-claims"] if false_claims else []
    words += ["--tsa", tsa] if tsa else []
    words += ["--tsa-cert", str(tsa_cert)] if tsa_cert else []
    words += ["--device", device] if device != "cpu" else []
    cmd = " ".join(shlex.quote(w) for w in words)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # else a blank line on stderr, before any error
    ) as bar:
        tasks: dict[str, object] = {}

        def progress(phase: str, i: int, n: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=n)
            bar.update(tasks[phase], completed=i, total=n)  # type: ignore[arg-type]

        with _notary(tsa, tsa_cert) as notary:
            summary = run_bench(
                spec,
                out_dir,
                jobs=jobs,
                ray=ray,
                retry_failed=retry_failed,
                command=cmd,
                progress=progress,
                notary=notary,
                device=device,
            )
    _say_skipped(out_dir)
    out.print(
        f"{summary.cells} cells: {summary.run} run, {summary.skipped} skipped (done before), "
        f"{summary.failed} failed"
        + (
            f" ({summary.failed_before} in an earlier run: --retry-failed runs them again)"
            if summary.failed_before
            else ""
        )
        + (f", {summary.unsupported} skipped as unsupported" if summary.unsupported else "")
        + f"; {summary.seconds:.0f} s; rows in {out_dir / 'results.jsonl'}",
    )
    if false_claims:
        run_false_claim_section(out_dir, schemes, jobs, cmd)


def run_false_claim_section(out_dir: Path, schemes: list[str] | None, jobs: int, cmd: str) -> None:
    """The false-claim check into out_dir (models cached under out_dir/false_claims)."""
    from nnmark.bench.false_claims import FalseClaimSpec, run_false_claims, write_outputs
    from nnmark.bench.grid import SHARED_DATA
    from nnmark.bench.metrics import machine

    fashion = SHARED_DATA / "fashion-mnist"
    seg = SHARED_DATA / "seg-bbbc039"
    source = f"fashion-mnist:{fashion}" if fashion.is_dir() else None
    chosen = tuple(schemes) if schemes else None
    if source is None:
        from nnmark.schemes import SCHEMES

        names = chosen or tuple(SCHEMES.names())
        sourced = [n for n in names if SCHEMES.get(n).needs_source]
        if sourced:
            chosen = tuple(n for n in names if n not in sourced)
            err.print(
                f"false claims: no Fashion-MNIST beside the checkout, {', '.join(sourced)} left "
                "out",
            )
    spec = FalseClaimSpec(
        schemes=chosen,
        seg_data=f"seg:{seg}" if seg.is_dir() else None,
        extra_data=(source,) if source else (),
        unrelated_source=source,
    )
    report = run_false_claims(
        spec,
        out_dir / "false_claims",
        jobs=jobs,
        progress=lambda m: err.print(m, markup=False),
    )
    write_outputs(report, out_dir, cmd, machine())
    bad = [k for k, v in report.summary().items() if not v["meets"]]
    out.print(
        f"false claims: {len(report.outcomes)} key-model pairs in {report.seconds:.0f} s; "
        f"rows failing the requirement: {', '.join(bad) or 'none'} "
        f"({out_dir / 'false_claims.md'})",
    )


#: The files of a results directory that `nnmark bench` writes and reads back.
BENCH_FILES = ("results.jsonl", "spec.json", "meta.json", "false_claims.json", "false_claims.md")


@command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(help="Results directory written by nnmark bench")],
    out_path: Annotated[
        Path, typer.Option("--out", help="The HTML report (one self-contained file)")
    ] = Path("report.html"),
    md: Annotated[Path | None, typer.Option("--md", help="Also a Markdown summary here")] = None,
    budget: Annotated[
        float | None,
        typer.Option(help="Fidelity an attacker may lose (0.05 = 5 points); default: the grid's"),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """One self-contained HTML report (PNG plots embedded) of a benchmark directory."""
    from nnmark.bench.report import write_report

    if not results.is_dir():
        raise NNMarkError(f"results directory not found: {results}")
    if budget is not None and not 0 <= budget <= 1:
        raise NNMarkError(f"--budget must be in [0, 1], got {budget}")
    outputs = {"--out": out_path, "--md": md}
    for (what, path), suffix in zip(outputs.items(), (".html", ".md")):
        if path is None:
            continue
        if path.suffix.lower() != suffix:  # `--md acme.nnkey` replaced a key with Markdown
            raise NNMarkError(f"{what} must be a {suffix} file, got {path.name!r}")
        # before any work: a folder, a device, a missing folder; an existing file only when it
        # is a previous report (`--md README.md` replaced a README; diff review, session 38)
        check_output(path, force or _previous_report(path, suffix))
        if results.resolve() / "models" in path.resolve().parents:
            raise NNMarkError(f"{what} {path} is inside the results' models folder")
    # what the bench wrote and reads back: replacing one with HTML broke every later report
    inputs = {f"results/{n}": results / n for n in BENCH_FILES}
    distinct_paths(outputs, inputs)
    write_report(results, out_path, md, budget)
    _say_skipped(results)
    out.print(f"saved {out_path}" + (f" and {md}" if md else ""))


def _previous_report(path: Path, suffix: str) -> bool:
    from nnmark.bench.report.render import REPORT_HEADS

    head = REPORT_HEADS[suffix].encode()
    if not path.is_file():  # a FIFO would block the read; check_output refuses it
        return False
    try:
        with path.open("rb") as f:
            return f.read(len(head)) == head
    except OSError:  # missing, a folder, unreadable: check_output says which
        return False


def _say_skipped(results: Path) -> None:
    from nnmark.bench.store import scan_rows

    _, bad = scan_rows(results)
    if bad:
        err.print(
            f"{bad} line(s) of {results / 'results.jsonl'} are not result rows: skipped",
        )

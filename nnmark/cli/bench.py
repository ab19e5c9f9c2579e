"""`nnmark bench` and `nnmark report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nnmark.cli.common import command, err, out
from nnmark.errors import NNMarkError


@command("bench")
def bench_cmd(
    preset: Annotated[str | None, typer.Option(help="quick")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or JSON BenchSpec")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Results directory (resumable)")] = Path(
        "bench-results"
    ),
    jobs: Annotated[int, typer.Option(help="Parallel worker processes")] = 2,
    schemes: Annotated[
        list[str] | None, typer.Option("--scheme", help="Only these schemes")
    ] = None,
    attacks: Annotated[
        list[str] | None, typer.Option("--attack", help="Only these attacks")
    ] = None,
) -> None:
    """Run schemes x attacks x strengths; a failed cell is recorded, never fatal."""
    import dataclasses

    from rich.progress import Progress

    from nnmark.bench import PRESETS, BenchSpec, run_bench

    if (preset is None) == (config is None):
        raise NNMarkError("give exactly one of --preset NAME or --config FILE")
    if preset is not None:
        if preset not in PRESETS:
            raise NNMarkError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        spec = PRESETS[preset]
    else:
        assert config is not None
        if not config.is_file():
            raise NNMarkError(f"config file not found: {config}")
        import yaml

        try:
            doc = yaml.safe_load(config.read_text())
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in (doc or {}).items()
            }
            spec = BenchSpec(**fields)
        except (yaml.YAMLError, TypeError) as exc:
            raise NNMarkError(f"{config}: bad bench config ({exc})") from None
    if schemes:
        spec = dataclasses.replace(spec, schemes=tuple(schemes))
    if attacks:
        spec = dataclasses.replace(spec, attacks=tuple(attacks))
    if jobs < 1:
        raise NNMarkError(f"--jobs must be >= 1, got {jobs}")
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("cells", total=None)
        summary = run_bench(
            spec, out_dir, jobs=jobs, progress=lambda i, n: bar.update(task, completed=i, total=n)
        )
    out.print(json.dumps(summary))
    out.print(f"{summary['failed']} failed cells; results in {out_dir / 'results.jsonl'}")


@command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(help="Results directory of nnmark bench")],
    out_path: Annotated[Path, typer.Option("--out", help="HTML report")] = Path("report.html"),
    md: Annotated[Path | None, typer.Option("--md", help="Also a Markdown summary")] = None,
    budget: Annotated[float, typer.Option(help="Fidelity budget of a successful attack")] = 0.05,
) -> None:
    """One self-contained HTML report (plots embedded) of a benchmark directory."""
    from nnmark.bench.report import write_report

    if not results.is_dir():
        raise NNMarkError(f"results directory not found: {results}")
    write_report(results, out_path, md, budget, command=f"nnmark report {results}")
    out.print(f"saved {out_path}" + (f" and {md}" if md else ""))

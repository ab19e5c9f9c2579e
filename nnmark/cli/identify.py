"""`nnmark identify`: which recipient's fingerprinted copy is this suspect?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nnmark.cli.common import MaxParamsOpt, command, out
from nnmark.errors import NNMarkError
from nnmark.stats import DEFAULT_ALPHA


@command("identify")
def identify_cmd(
    model_path: Annotated[Path, typer.Argument(help="Suspect model file")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder of candidate *.nnkey files")],
    alpha: Annotated[float, typer.Option(help="Family-wise significance level")] = DEFAULT_ALPHA,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    max_params: MaxParamsOpt = None,
) -> None:
    """Verify a suspect against every key in a folder and name the recipient whose mark is in it.

    p-values are Bonferroni-adjusted over the candidates. Exit 0 when a recipient is named,
    1 when none is, 2 on errors.
    """
    from nnmark.fingerprint import identify, load_keys
    from nnmark.suspect import load_suspect

    if not 0 < alpha < 1:
        raise NNMarkError(f"--alpha must be in (0, 1), got {alpha}")
    candidates = load_keys(keys)
    result = identify(load_suspect(model_path, max_params), candidates, alpha)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        table = Table(title=f"identify: {model_path}", show_header=True)
        for col in ("key file", "recipient", "scheme", "BER", "p-value", "adjusted p", "found"):
            table.add_column(col)
        for c in sorted(result.candidates, key=lambda c: c.p_adjusted):
            table.add_row(
                c.label,
                c.owner,
                c.scheme,
                "-" if c.ber is None else f"{c.ber:.3f}",
                f"{c.p_value:.3g}",
                f"{c.p_adjusted:.3g}",
                "yes" if c.found else "no",
            )
        out.print(table)
        named = result.named or "none"
        also = f" (also found: {', '.join(result.also_found)})" if result.also_found else ""
        out.print(
            f"named: {named}{also}; Bonferroni over {len(result.candidates)} candidates, "
            f"alpha {alpha:g}"
        )
    raise typer.Exit(result.exit_code)

"""`nnmark identify`: which recipient's fingerprinted copy is this suspect?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nnmark.cli.common import (
    KeyDataOpt,
    MaxParamsOpt,
    SuspectSeenOpt,
    TsaCertOpt,
    command,
    out,
    read_certs,
    read_seen,
)
from nnmark.errors import NNMarkError
from nnmark.stats import DEFAULT_ALPHA


@command("identify")
def identify_cmd(
    model_path: Annotated[Path, typer.Argument(help="Suspect model file")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder of candidate *.nnkey files")],
    alpha: Annotated[float, typer.Option(help="Family-wise significance level")] = DEFAULT_ALPHA,
    data: KeyDataOpt = None,
    tsa_cert: TsaCertOpt = None,
    suspect_seen: SuspectSeenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    max_params: MaxParamsOpt = None,
) -> None:
    """Verify a suspect against every key in a folder and name the recipient whose mark is in it.

    p-values are Bonferroni-adjusted over the candidates, and a candidate is named only under
    verify's claim rule at alpha / candidates (and its forgery cost, stamped or not). Exit 0
    when a recipient is named, 1 when none is, 2 on errors.
    """
    from nnmark.cli.common import shown_doc, suspect_copy, suspect_lines
    from nnmark.data import load_data
    from nnmark.fingerprint import identify, load_keys
    from nnmark.suspect import load_suspect

    if not 0 < alpha < 1:
        raise NNMarkError(f"--alpha must be in (0, 1), got {alpha}")
    certs, seen = read_certs(tsa_cert), read_seen(suspect_seen)
    candidates = load_keys(keys)
    bundles = [load_data(spec) for spec in data or []]
    # read from a private copy, whose digest the result names (SuspectCopy): a recipient is
    # named for this file
    with suspect_copy(model_path) as copy:
        suspect = load_suspect(copy.path, max_params)
        suspect.label = str(model_path)
        result = identify(
            suspect, candidates, alpha, data=bundles, tsa_certs=certs, suspect_seen=seen
        )
    record = copy.record()
    if as_json:
        print(json.dumps(shown_doc(result.to_dict(), copy.shown) | {"suspect": record}))
    else:
        table = Table(title=f"identify: {model_path}", show_header=True)
        cols = ("key file", "recipient", "scheme", "BER", "p-value", "adjusted p", "found", "why")
        for col in cols:
            table.add_column(col, overflow="fold")  # a key file's name whole, not "alice.nn…"
        for c in sorted(result.candidates, key=lambda c: c.p_adjusted):
            table.add_row(
                c.label,
                c.owner,
                c.scheme,
                "-" if c.ber is None else f"{c.ber:.3f}",
                f"{c.p_value:.3g}",
                f"{c.p_adjusted:.3g}",
                "yes" if c.found else "no",
                "" if c.found else copy.shown(c.reason or ""),
            )
        out.print(table)
        named = f"{result.named} ({result.named_key})" if result.named_key else "none"
        also = f" (also found: {', '.join(result.also_found)})" if result.also_found else ""
        out.print(
            f"named: {named}{also}; Bonferroni over {len(result.candidates)} candidates, "
            f"alpha {alpha:g}",
        )
        for line in suspect_lines(record):
            out.print(line, markup=False)
    raise typer.Exit(result.exit_code)

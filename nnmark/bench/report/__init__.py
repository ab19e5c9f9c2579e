"""`nnmark report`: what the rows say (`outcomes`), the plots (`plots`), the tables (`tables`),
and one HTML page and a Markdown summary rendered from the same sections (`render`)."""

from nnmark.bench.report.outcomes import (
    POSITIVE,
    annotate,
    evidence,
    headline,
    succeeded,
    too_weak,
    usable,
)
from nnmark.bench.report.plots import figures
from nnmark.bench.report.render import Section, write_report
from nnmark.bench.report.tables import FALSE_CLAIM_NOTE, false_claim_table, tables

__all__ = [
    "FALSE_CLAIM_NOTE",
    "POSITIVE",
    "Section",
    "annotate",
    "evidence",
    "false_claim_table",
    "figures",
    "headline",
    "succeeded",
    "tables",
    "too_weak",
    "usable",
    "write_report",
]

"""The benchmark: schemes x attacks x strengths on one task, rows in JSON lines, a report.

Row schema (one JSON object per line in RESULTS/results.jsonl, one per cell):
  cell (str, unique id), data, arch, scheme, attack (spec), ladder_value (float | null: the
  strength on the attack's ladder), fidelity_metric ("accuracy" | "dice"), fidelity_before,
  fidelity_after, verdict, statistic_name, statistic, p_value, queries, seconds, peak_rss_mib,
  error (str | null: the sweep never stops on one failed cell).
Unmarked-model rows (scheme "none") verify the plain model against every scheme's key: their
p-values are the calibration evidence (false claims).
"""

from nnmark.bench.grid import PRESETS, BenchSpec
from nnmark.bench.runner import run_bench

__all__ = ["PRESETS", "BenchSpec", "run_bench"]

"""A data-set run's table: seed 001's Table 1 layout, per method run and threshold, from the
rows the runner writes."""

from __future__ import annotations

import numpy as np

from ..analysis.faithfulness import OWN_SCORES
from ..core.io import OutputDirectory, atomic_write, write_csv

TABLE_COLUMNS = ("dataset", "model", "method", "threshold", "dice_explained",
                 "perturbation_ratio", "seconds_per_image", "context_hit_rate", "images")
"""Columns of table.csv and table.md."""


def summarize_rows(rows: list[dict], dataset: str, model_name: str) -> list[dict]:
    """Table 1: means per (method, threshold) of Dice explained, perturbation ratio, seconds
    per image and, where the data set has context masks, the context hit rate (None where
    no row has a value)."""
    table = []
    for method, threshold in sorted({(row["method"], row["threshold"]) for row in rows}):
        group = [row for row in rows if (row["method"], row["threshold"]) == (method, threshold)]

        def mean(field, group=group):
            values = [float(row[field] == "True") if field == "context_hit" else float(row[field])
                      for row in group if row[field] != ""]
            return float(np.mean(values)) if values else None

        table.append({"dataset": dataset, "model": model_name, "method": method,
                      "threshold": {"": "-", OWN_SCORES: "MSR"}.get(threshold, threshold),
                      "dice_explained": mean("dice_explained"),
                      "perturbation_ratio": mean("perturbation_ratio"),
                      "seconds_per_image": mean("seconds"),
                      "context_hit_rate": mean("context_hit"), "images": len(group)})
    return table


def table_markdown(table: list[dict]) -> str:
    """The Table-1 layout as a Markdown table (empty cells where a value does not apply)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for entry in table:
        cells = [("" if entry[c] is None else f"{entry[c]:.3f}" if isinstance(entry[c], float)
                  else str(entry[c])) for c in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(output: OutputDirectory, table: list[dict]) -> None:
    """``table.csv`` and ``table.md`` of :func:`summarize_rows`'s table into ``output``."""
    write_csv(output.file("table.csv"), list(table[0]) if table else ["dataset"], table)
    atomic_write(output.file("table.md"), lambda f: f.write(table_markdown(table)), mode="w",
                 overwrite=True)


# -- the driver ----------------------------------------------------------------------------------

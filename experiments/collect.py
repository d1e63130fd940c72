"""Copy a finished sweep's results into a study folder, with its tables as markdown.

    python experiments/collect.py SWEEP_DIR experiments/STUDY --rows data.seq_len \
        --metrics val/loss_rel_baseline val/recall_acc

writes STUDY/summary.csv, STUDY/report.html, STUDY/figures/*.png (as the framework's report made
them) and STUDY/results.md: one table per metric, a row per value of --rows, a column per
configuration (the other varying axes). Skipped trials are left out; numbers are not edited.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd


def axis_columns(summary: pd.DataFrame) -> list[str]:
    """The sweep's axes: the columns between 'status' and the first metric (or 'rep')."""
    columns = list(summary.columns)[list(summary.columns).index("status") + 1:]
    axes = []
    for column in columns:
        if column == "rep" or column.startswith(("val/", "test/", "train/")):
            break
        axes.append(column)
    return axes


def pivot(summary: pd.DataFrame, rows: str, metric: str) -> pd.DataFrame:
    """Mean of `metric` per value of `rows` (index) and configuration of the other axes (columns)."""
    done = summary[summary.status != "skipped"]
    axes = [c for c in axis_columns(done) if c != rows and done[c].nunique() > 1]
    config = done[axes].astype(str).agg(" · ".join, axis=1) if axes else pd.Series("all", index=done.index)
    return done.assign(config=config).pivot_table(index=rows, columns="config", values=metric, aggfunc="mean")


def markdown(table: pd.DataFrame) -> str:
    header = [str(table.index.name)] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([str(index)] + [f"{v:.4g}" for v in row]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--rows", default="data.seq_len")
    parser.add_argument("--metrics", nargs="+", default=["val/loss"])
    args = parser.parse_args()

    summary = pd.read_csv(args.sweep_dir / "summary.csv")
    args.study_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.sweep_dir / "summary.csv", args.study_dir / "summary.csv")
    shutil.copy(args.sweep_dir / "report.html", args.study_dir / "report.html")
    shutil.copytree(args.sweep_dir / "figures", args.study_dir / "figures", dirs_exist_ok=True)
    parts = [f"# Results ({len(summary)} trials; made by experiments/collect.py from summary.csv)\n"]
    for metric in args.metrics:
        table = pivot(summary, args.rows, metric)
        parts.append(f"## {metric}\n\n{markdown(table)}\n")
    (args.study_dir / "results.md").write_text("\n".join(parts))
    print(f"wrote {args.study_dir}/results.md, summary.csv, report.html, figures/")


if __name__ == "__main__":
    main()

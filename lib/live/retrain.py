"""The retraining policy: when the training cutoff moves, and the training table it cuts.

New bars alone never retrain. The train stage reads `data/train_features.parquet`, which the
featurize stage cuts from its features at `train.cutoff` (`lib.data.cutoff.cut_training_rows`): rows
dated <= cutoff, and a label only where it was realised by the cutoff (label_end <= cutoff), so
the table, and with it the models, stays byte-for-byte the same while the cutoff stands. With
`train.cutoff: null` (the default) the table is the features file itself: every new bar retrains.
The weekly refresh asks `next_cutoff` before `dvc repro` and writes its answer with `set_cutoff`
(`lib.live.weekly.plan_cutoff` does both):

* `always`: null (train on everything, every week: today's behaviour);
* `every_n_weeks`: the latest bar's date when no cutoff is set yet or `train.every_n_weeks`
  ledger entries were made under the current cutoff, else the current cutoff;
* `on_drift`: the latest bar's date when no cutoff is set yet or the ledger's last entry raised a
  drift alarm, else the current cutoff.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from lib.data.cutoff import cut_training_rows
from lib.errors import PipelineError
from lib.io import write_text

__all__ = ["cut_training_rows", "next_cutoff", "set_cutoff"]  # cut_training_rows: its home is lib.data.cutoff


def next_cutoff(
    retrain: str, every_n_weeks: int, cutoff: str | None, last_date: str, entries: pd.DataFrame
) -> str | None:
    """The training cutoff for this week's run (module docstring). `entries`: `lib.live.ledger.entries`."""
    if retrain == "always":
        return None
    if cutoff is None:
        return last_date
    if retrain == "every_n_weeks":
        made = int((entries["cutoff"].fillna("") == cutoff).sum()) if len(entries) else 0
        return last_date if made >= every_n_weeks else cutoff
    if retrain == "on_drift":
        alarm = bool(entries["drift_alarm"].iloc[-1]) if len(entries) else False
        return last_date if alarm else cutoff
    raise PipelineError(f"params.yaml: train.retrain must be always, every_n_weeks or on_drift, got {retrain!r}")


_SECTION = re.compile(r"^(\S[^:]*):")
_CUTOFF = re.compile(r"^(\s+cutoff:\s*)(\S+)(.*)$")


def set_cutoff(params_path: str | Path, cutoff: str | None) -> bool:
    """Write `train.cutoff` in params.yaml (only that line; comments kept), atomically; True when it changed."""
    path = Path(params_path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    section = None
    for i, line in enumerate(lines):
        top = _SECTION.match(line)
        if top:
            section = top.group(1)
            continue
        m = _CUTOFF.match(line.rstrip("\n"))
        if section == "train" and m:
            value = "null" if cutoff is None else f'"{cutoff}"'
            if m.group(2) == value:
                return False
            lines[i] = f"{m.group(1)}{value}{m.group(3)}\n"
            write_text("".join(lines), path)
            return True
    raise PipelineError(f"{path}: no train.cutoff line to set (add `cutoff: null` under train:)")

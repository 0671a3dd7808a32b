"""featurize: the feature set of `features.set` (basic technical and calendar features, or alpha158) per ticker,
optionally normalised per date (`features.cross_section`), plus the forward-return label; and the rows the models
train on (`--trainset`, data/train_features.parquet), cut at `train.cutoff` (lib/data/cutoff.py).

`train.cutoff: null` (the default): the training rows are the features file itself, byte for byte, so every new bar
retrains. A date: rows dated <= cutoff, with a label only where it ended by the cutoff; while the cutoff stands,
new bars leave that file, and so the train stage, untouched (the weekly refresh moves it: train.retrain)."""

import logging

from lib.cli import path_args, run_stage
from lib.data.cutoff import cut_training_rows
from lib.data.feature_sets import make_features
from lib.io import atomic_path, read_table, write_table
from lib.params import load_params
from lib.tables import COLUMNS, LABEL

log = logging.getLogger("featurize")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "prices", "out", "trainset")
    params = load_params()
    features = make_features(read_table(args.prices, COLUMNS), params["features"])
    write_table(features, args.out)
    log.info("%d rows x %d columns -> %s", *features.shape, args.out)
    cutoff = params["train"]["cutoff"]
    if cutoff is None:
        with atomic_path(args.trainset) as tmp:
            tmp.write_bytes(args.out.read_bytes())
        log.info("train.cutoff null: training on every row of %s", args.out)
        return
    cut = cut_training_rows(features, cutoff)
    write_table(cut, args.trainset)
    log.info("train.cutoff %s: %d of %d rows, %d labelled", cutoff, len(cut), len(features), cut[LABEL].notna().sum())


if __name__ == "__main__":
    run_stage("featurize", main)

"""featurize: technical and calendar features per ticker, plus the forward-return label."""

import logging

from lib.cli import path_args, run_stage
from lib.data.features import build_features
from lib.io import read_table, write_table
from lib.params import load_params
from lib.tables import COLUMNS

log = logging.getLogger("featurize")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "prices", "out")
    cfg = load_params()["features"]
    features = build_features(read_table(args.prices, COLUMNS), cfg)
    write_table(features, args.out)
    log.info("%d rows x %d columns -> %s", *features.shape, args.out)


if __name__ == "__main__":
    run_stage("featurize", main)

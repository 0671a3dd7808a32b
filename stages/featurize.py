"""featurize: technical and calendar features per ticker, plus the forward-return label."""
import argparse
import logging
from pathlib import Path

from lib.cli import run_stage
from lib.features import build_features
from lib.io import read_table, write_csv
from lib.params import load_params
from lib.providers import COLUMNS

log = logging.getLogger("featurize")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prices", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cfg = load_params()["features"]
    features = build_features(read_table(args.prices, COLUMNS), cfg)
    write_csv(features.assign(date=features["date"].dt.strftime("%Y-%m-%d")), args.out)
    log.info("%d rows x %d columns -> %s", *features.shape, args.out)


if __name__ == "__main__":
    run_stage("featurize", main)

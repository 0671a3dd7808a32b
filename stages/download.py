"""download: fetch daily bars for `data.tickers` from `data.source` into one long table."""
import argparse
import logging
from pathlib import Path

from lib.cli import run_stage
from lib.io import write_csv
from lib.params import load_params
from lib.providers import download

log = logging.getLogger("download")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cfg = load_params()["data"]
    prices = download(cfg, args.sample_dir)
    write_csv(prices.assign(date=prices["date"].dt.strftime("%Y-%m-%d")), args.out)
    log.info("%d rows for %s from %s -> %s", len(prices), cfg["tickers"], cfg["source"], args.out)


if __name__ == "__main__":
    run_stage("download", main)

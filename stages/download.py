"""download: fetch daily bars for `data.tickers` from `data.source` into one long table."""

import logging

from lib.cli import path_args, run_stage
from lib.data.providers import download
from lib.io import write_table
from lib.params import load_params

log = logging.getLogger("download")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "sample-dir", "out")
    cfg = load_params()["data"]
    prices = download(cfg, args.sample_dir)
    write_table(prices, args.out)
    log.info("%d rows for %s from %s -> %s", len(prices), cfg["tickers"], cfg["source"], args.out)


if __name__ == "__main__":
    run_stage("download", main)

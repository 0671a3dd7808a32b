"""download: fetch daily bars for `data.tickers` from `data.source` into one long table.

For yfinance and FMP the bars come from the store (`--store`, filled by `python -m stages.refresh`) when it holds
every ticker from `data.start` on; without one (a fresh clone) they are fetched from the source as before."""

import logging

from lib.cli import path_args, run_stage
from lib.data.providers import download
from lib.data.store import from_store
from lib.io import write_table
from lib.params import load_params

log = logging.getLogger("download")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "sample-dir", "store", "out")
    cfg = load_params()["data"]
    prices = from_store(cfg, args.store)
    origin = f"the store {args.store}" if prices is not None else cfg["source"]
    if prices is None:
        prices = download(cfg, args.sample_dir)
    write_table(prices, args.out)
    log.info("%d rows for %s from %s -> %s", len(prices), cfg["tickers"], origin, args.out)


if __name__ == "__main__":
    run_stage("download", main)

"""train: one model per walk-forward fold and a final model on all labelled data.

Resumable: after every completed epoch each run's state goes to `--cache/<key>/`, the key a
hash of the params that change training and the features' sha256; a rerun after a crash or
a SIGKILL resumes from there and ends with the same bits. The key's folder is removed once
every model is written."""
import logging
import shutil
import time

import numpy as np
import pandas as pd
from dvclive import Live

from lib.cli import path_args, run_stage
from lib.dataset import Panel
from lib.io import clear_dir, file_sha256, read_table, write_csv
from lib.params import load_params
from lib.tables import LABEL
from lib.training import (
    EpochLog,
    RunCache,
    resolve_amp,
    resolve_device,
    save_checkpoint,
    seed_everything,
    train_fold,
)
from lib.walk_forward import make_folds

log = logging.getLogger("train")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "features", "models", "live", "cache")
    params = load_params()
    seed_everything(params["train"]["seed"], params["train"]["threads"])
    device = resolve_device(params["train"]["device"])
    amp = resolve_amp(params["train"]["amp"], device)
    features = read_table(args.features, ["date", "ticker", LABEL])
    panel = Panel.from_frame(features, params["model"]["seq_len"])
    labelled_end = features.loc[features[LABEL].notna(), "date"].max()
    folds = make_folds(pd.DatetimeIndex(np.unique(panel.dates)), labelled_end, params["walk_forward"])
    data_hash = file_sha256(args.features)
    cache = RunCache.for_run(args.cache, params, data_hash, device.type)
    cache_dir = cache.folder
    log.info("training %d folds + final, %s x%d, on %s (amp: %s); resume state in %s", len(folds) - 1,
             params["model"]["arch"], params["model"]["ensemble"], device, amp.name, cache_dir)
    clear_dir(args.models)  # this stage owns both folders: nothing from an earlier run may survive
    clear_dir(args.live)
    curves: list[dict] = []

    def on_epoch(e: EpochLog) -> None:  # timings go to the log only: they differ from run to run
        if not e.fold.endswith("/refit"):  # a refit has no validation loss: log only
            curves.append({"model": e.fold, "epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss,
                           "lr": e.lr})
        if not e.cached:
            log.info("%s epoch %d: train %.4f val %.4f lr %.2e %.1fs %.0f samples/s %s loss scale %g",
                     e.fold, e.epoch, e.train_loss, e.val_loss, e.lr, e.seconds, e.samples_per_s, e.amp_dtype,
                     e.loss_scale)

    start = time.perf_counter()
    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for i, fold in enumerate(folds):
            log.info("[%d/%d] %s: fit %s..%s, val %s..%s, test %s..%s", i + 1, len(folds), fold.name, fold.fit_start,
                     fold.fit_end, fold.val_start, fold.val_end, fold.test_start or "-", fold.test_end or "-")
            refit = fold.name == "final" and params["train"]["final_refit"]
            ckpt = train_fold(panel, fold, params, device, amp, on_epoch, cache=cache, refit=refit)
            save_checkpoint({**ckpt, "params": params, "data_hash": data_hash}, args.models / f"{fold.name}.pt")
            live.log_metric(f"{fold.name}/best_val_loss", ckpt["best_val_loss"], plot=False)
            live.log_metric(f"{fold.name}/best_epoch", ckpt["best_epoch"], plot=False)
            if len(ckpt["members"]) > 1:
                for m, (loss, epoch) in enumerate(zip(ckpt["member_best_val_loss"], ckpt["member_best_epoch"],
                                                      strict=True)):
                    live.log_metric(f"{fold.name}/member_{m}/best_val_loss", loss, plot=False)
                    live.log_metric(f"{fold.name}/member_{m}/best_epoch", epoch, plot=False)
    write_csv(pd.DataFrame(curves), args.live / "curves.csv")
    shutil.rmtree(cache_dir, ignore_errors=True)  # every output is written: nothing left to resume
    log.info("trained in %.1fs", time.perf_counter() - start)


if __name__ == "__main__":
    run_stage("train", main)

"""train: one model per walk-forward fold and a final model on all labelled data."""
import logging

import numpy as np
import pandas as pd
from dvclive import Live

from lib.cli import path_args, run_stage
from lib.dataset import Panel
from lib.io import clear_dir, file_sha256, read_table, write_csv
from lib.params import load_params
from lib.tables import LABEL
from lib.training import EpochLog, resolve_amp, resolve_device, save_checkpoint, seed_everything, train_fold
from lib.walk_forward import make_folds

log = logging.getLogger("train")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "features", "models", "live")
    params = load_params()
    seed_everything(params["train"]["seed"], params["train"]["threads"])
    device = resolve_device(params["train"]["device"])
    amp = resolve_amp(params["train"]["amp"], device)
    features = read_table(args.features, ["date", "ticker", LABEL])
    panel = Panel.from_frame(features, params["model"]["seq_len"])
    labelled_end = features.loc[features[LABEL].notna(), "date"].max()
    folds = make_folds(pd.DatetimeIndex(np.unique(panel.dates)), labelled_end, params["walk_forward"])
    data_hash = file_sha256(args.features)
    log.info("training %d folds + final on %s (amp: %s)", len(folds) - 1, device, amp.name)
    clear_dir(args.models)  # this stage owns both folders: nothing from an earlier run may survive
    clear_dir(args.live)
    curves: list[dict] = []

    def on_epoch(e: EpochLog) -> None:  # timings go to the log only: they differ from run to run
        curves.append({"model": e.fold, "epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss,
                       "lr": e.lr})
        log.info("%s epoch %d: train %.4f val %.4f lr %.2e %.1fs %.0f samples/s %s loss scale %g",
                 e.fold, e.epoch, e.train_loss, e.val_loss, e.lr, e.seconds, e.samples_per_s, e.amp_dtype,
                 e.loss_scale)

    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for i, fold in enumerate(folds):
            log.info("[%d/%d] %s: fit %s..%s, val %s..%s, test %s..%s", i + 1, len(folds), fold.name, fold.fit_start,
                     fold.fit_end, fold.val_start, fold.val_end, fold.test_start or "-", fold.test_end or "-")
            ckpt = train_fold(panel, fold, params, device, amp, on_epoch)
            save_checkpoint({**ckpt, "params": params, "data_hash": data_hash}, args.models / f"{fold.name}.pt")
            live.log_metric(f"{fold.name}/best_val_loss", ckpt["best_val_loss"], plot=False)
            live.log_metric(f"{fold.name}/best_epoch", ckpt["best_epoch"], plot=False)
    write_csv(pd.DataFrame(curves), args.live / "curves.csv")


if __name__ == "__main__":
    run_stage("train", main)

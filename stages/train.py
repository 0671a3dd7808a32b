"""train: one model per walk-forward fold and a final model on all labelled data.

Resumable: after every completed epoch each run's state goes to `--cache/<key>/`, the key a
hash of the params that change training and the features' sha256; a rerun after a crash or
a SIGKILL resumes from there and ends with the same bits. The key's folder is removed once
every model is written.

Scale-out, two ways (lib/ml/trainer.py, lib/ml/distributed.py):
* `train.workers: N` trains N models (folds, final) at once in spawned processes, each with
  `train.threads` threads; on CPU the outputs are byte-identical to `workers: 1`.
* `torchrun --nproc_per_node=K -m stages.train ...` (same arguments) trains each model
  data-parallel on K ranks (gloo on CPU, nccl on CUDA); rank 0 alone writes.

Baselines (evaluate.baseline_models, lib/ml/baselines.py): each family is trained on the same walk-forward
folds and features, after the model's jobs and in the same processes, into models/baselines/<family>/."""

import logging
import shutil
import time
from argparse import Namespace
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from lib.cli import path_args, run_stage
from lib.io import clear_dir, file_sha256, read_table, write_bytes, write_csv
from lib.ml import distributed
from lib.ml.baselines import baseline_dir, baseline_families, baseline_jobs
from lib.ml.folds import make_folds
from lib.ml.panel import WindowPanel
from lib.ml.trainer import RunCache, TrainJob, check_processes, resolve_amp, resolve_device, train_jobs
from lib.params import load_params
from lib.tables import LABEL

log = logging.getLogger("train")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "features", "models", "live", "cache")
    params = load_params()
    device = distributed.rank_device(resolve_device(params["train"]["device"]))
    check_processes(params, device)
    with distributed.process_group(device):
        train(args, params, device)


def train(args: Namespace, params: dict[str, Any], device: torch.device) -> None:
    """Every model, in fold order; on rank 0 (or the only process) write them, their metrics and curves."""
    tcfg, workers = params["train"], params["train"]["workers"]
    features = read_table(args.features, ["date", "ticker", LABEL])
    panel = WindowPanel.from_frame(features, params["model"]["seq_len"])
    labelled_end = features.loc[features[LABEL].notna(), "date"].max()
    folds = make_folds(pd.DatetimeIndex(np.unique(panel.dates)), labelled_end, params["walk_forward"])
    data_hash = file_sha256(args.features)
    main_rank = distributed.is_main()
    cache = RunCache.for_run(args.cache, params, data_hash, device.type) if main_rank else RunCache(None)
    log.info(
        "training %d folds + final, %s x%d, on %s (amp: %s) in %d process(es) x %d rank(s); resume state in %s",
        len(folds) - 1,
        params["model"]["arch"],
        params["model"]["ensemble"],
        device,
        resolve_amp(tcfg["amp"], device).name,
        workers,
        distributed.world_size(),
        cache.folder,
    )
    spread = device.type == "cuda" and workers > 1  # workers take the visible GPUs in turn
    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if spread else [device]
    jobs = [
        TrainJob(panel, fold, params, data_hash, str(devices[i % len(devices)]), cache, f"[{i + 1}/{len(folds)}]")
        for i, fold in enumerate(folds)
    ]
    families = baseline_families(params, note=True)
    extra = baseline_jobs(panel, folds, params, data_hash, [str(d) for d in devices])
    if families:
        log.info("baseline models %s on the same %d folds", families, len(folds) - 1)
    trained = train_jobs([*jobs, *(job for _, job in extra)], workers)
    if not main_rank:
        for _ in trained:  # train in step with rank 0; write nothing
            pass
        return
    clear_dir(args.models)  # this stage owns both folders: nothing from an earlier run may survive
    clear_dir(args.live)
    curves: list[dict] = []
    start = time.perf_counter()
    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for model in islice(trained, len(jobs)):
            write_bytes(model.checkpoint, args.models / f"{model.name}.pt")
            for key, value in model.metrics.items():
                live.log_metric(f"{model.name}/{key}", value, plot=False)
            curves += [
                {"model": e.fold, "epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss, "lr": e.lr}
                for e in model.epochs
                if not e.fold.endswith("/refit")
            ]  # a refit: no val loss
    write_csv(pd.DataFrame(curves), args.live / "curves.csv")
    model_done = time.perf_counter()
    for (family, _), model in zip(extra, trained, strict=True):  # losses to the log only (train_job logs them)
        write_bytes(model.checkpoint, baseline_dir(args.models, family) / f"{model.name}.pt")
    if extra:
        log.info("baselines trained in %.1fs", time.perf_counter() - model_done)
    shutil.rmtree(cache.folder, ignore_errors=True)  # every output is written: nothing left to resume
    log.info("trained in %.1fs", time.perf_counter() - start)


if __name__ == "__main__":
    run_stage("train", main)

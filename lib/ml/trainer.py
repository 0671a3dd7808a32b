"""A fold's training (ensemble members, the final refit), the train stage's models in one or
several processes, and self-describing checkpoints.

The loop itself lives in lib/ml/fit.py, the models behind one contract in lib/ml/models.py,
data-parallel training of one model under torchrun in lib/ml/distributed.py."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.cli import setup_logging
from lib.errors import PipelineError
from lib.ml import distributed

# Re-exported: the stages and tests import the loop's API from here.
from lib.ml.fit import EpochLog, RunCache, objective, torch_bytes
from lib.ml.folds import Fold
from lib.ml.models import REGISTRY, Ensemble, FoldData, build, restore
from lib.ml.panel import WindowPanel
from lib.ml.runtime import Amp, deterministic_runtime, resolve_amp, resolve_device, seed_everything  # noqa: F401
from lib.schema import result_params

log = logging.getLogger(__name__)


def _fold_data(
    panel: WindowPanel,
    start: str,
    end: str,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    tcfg: dict[str, Any],
    device: torch.device,
) -> tuple[FoldData, dict[str, Any]]:
    """Scale on the rows dated in [start, end] (the fit rows' dates); the labels as train.label_norm
    says (`WindowPanel.training_labels`: standardised on the fit rows, or normalised per date)."""
    scaler = panel.fit_scaler(start, end)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    labels, label_mean, label_std = panel.training_labels(fit_idx, val_idx, tcfg["label_norm"])
    x = torch.from_numpy(panel.scaled(scaler.mean_, scale, tcfg["feature_clip"])).to(device)
    y = torch.from_numpy(labels).to(device)
    dates = torch.from_numpy(panel.dates.astype(np.int64)).to(device)
    rows = torch.from_numpy(fit_idx).to(device), torch.from_numpy(val_idx).to(device)
    data = FoldData(x, y, *rows, panel.seq_len, dates)
    return data, {
        "scaler_mean": scaler.mean_.tolist(),
        "scaler_scale": scale.tolist(),
        "feature_clip": tcfg["feature_clip"],
        "label_mean": label_mean,
        "label_std": label_std,
        "label_norm": tcfg["label_norm"],  # none, or predictions are per-date scores, not log returns
    }


def _span(panel: WindowPanel, rows: np.ndarray) -> dict[str, Any]:
    d = panel.dates[rows]
    return {
        "start": str(np.datetime_as_string(d.min(), "D")),
        "end": str(np.datetime_as_string(d.max(), "D")),
        "rows": len(rows),
    }


def member_tag(fold: str, i: int, n: int) -> str:
    return fold if n == 1 else f"{fold}/m{i}"


def train_fold(
    panel: WindowPanel,
    fold: Fold,
    params: dict[str, Any],
    device: torch.device,
    amp: Amp,
    on_epoch: Callable[[EpochLog], None],
    cache: RunCache | None = None,
    refit: bool = False,
) -> dict[str, Any]:
    """Train `model.ensemble` members (seeds seed, seed+1, ...) on the fold with early stopping
    on its early-stopping (val) rows; return a self-describing checkpoint holding every member.

    `refit` (the final model with train.final_refit): then train each member afresh on every
    labelled row of the fold (fit + purge + val) for the epochs early stopping chose."""
    tcfg, mcfg = params["train"], params["model"]
    n_members = mcfg["ensemble"]
    fit_idx = panel.rows(
        fold.fit_start, fold.fit_end, labelled=True, stride=tcfg["sample_stride"], labels_before=fold.val_start
    )
    val_idx = panel.rows(fold.val_start, fold.val_end, labelled=True, labels_before=fold.labels_before)
    if len(fit_idx) == 0 or len(val_idx) == 0:
        raise PipelineError(
            f"train: {fold.name} has {len(fit_idx)} training and {len(val_idx)} validation samples; "
            "lower model.seq_len or walk_forward.folds"
        )
    data, scaling = _fold_data(panel, fold.fit_start, fold.fit_end, fit_idx, val_idx, tcfg, device)
    seeds = [tcfg["seed"] + i for i in range(n_members)]
    members, results = [], []
    for i, seed in enumerate(seeds):
        model = build(mcfg, tcfg, n_features=len(panel.features), seq_len=panel.seq_len, seed=seed, amp=amp)
        results.append(model.fit(data, tag=member_tag(fold.name, i, n_members), on_epoch=on_epoch, cache=cache))
        members.append(model)
    best_val = results[0].best_val_loss
    if n_members > 1:  # the ensemble's own val loss: what averaging bought
        mean_val, _ = Ensemble(members).predict(data.x, data.val_rows)
        val_y, val_dates = data.y[data.val_rows].float().cpu(), data.dates[data.val_rows].cpu()
        best_val = float(objective(tcfg)(torch.from_numpy(mean_val).float(), val_y, val_dates))
    trained_on = _span(panel, fit_idx)
    if refit:
        all_idx = panel.rows(fold.fit_start, fold.val_end, labelled=True, stride=tcfg["sample_stride"])
        data, scaling = _fold_data(panel, fold.fit_start, fold.val_end, all_idx, np.zeros(0, np.int64), tcfg, device)
        members = []
        for i, (seed, res) in enumerate(zip(seeds, results, strict=True)):
            model = build(mcfg, tcfg, n_features=len(panel.features), seq_len=panel.seq_len, seed=seed, amp=amp)
            model.fit(
                data,
                tag=f"{member_tag(fold.name, i, n_members)}/refit",
                on_epoch=on_epoch,
                cache=cache,
                epochs=res.epochs_run if model.family == "sklearn" else res.best_epoch + 1,
            )
            members.append(model)
        trained_on = _span(panel, all_idx)
        log.info(
            "%s: refit on %d labelled rows %s..%s for %s epoch(s)",
            fold.name,
            len(all_idx),
            trained_on["start"],
            trained_on["end"],
            [r.best_epoch + 1 for r in results],
        )
    best_epoch = max(r.best_epoch for r in results)
    log.info(
        "%s: best epoch %s of %s, validation loss %.4f, %d fit / %d val samples",
        fold.name,
        [r.best_epoch for r in results],
        [r.epochs_run for r in results],
        best_val,
        len(fit_idx),
        len(val_idx),
    )
    return {
        "arch": mcfg["arch"],
        "family": members[0].family,
        "model": mcfg,
        "members": [m.state() for m in members],
        "member_seeds": seeds,
        "member_best_epoch": [r.best_epoch for r in results],
        "member_best_val_loss": [r.best_val_loss for r in results],
        "features": panel.features,
        "seq_len": panel.seq_len,
        **scaling,
        "fold": fold.as_dict(),
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "epochs_run": max(r.epochs_run for r in results),
        "final_refit": refit,
        "trained_on": trained_on,
        "n_fit": len(fit_idx),
        "n_val": len(val_idx),
        "device": device.type,
        "amp_dtype": amp.name,
        "world_size": distributed.world_size(),
        "torch": str(torch.__version__),
    }


def _canonical(obj: Any) -> Any:
    """Fresh containers and interned strings: pickle writes a repeated object as a reference, so
    without this the bytes would depend on which equal objects happen to be shared (params parsed
    from YAML share their keys with the code's literals; a copy sent to a worker does not)."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def checkpoint_bytes(ckpt: dict[str, Any]) -> bytes:
    """A checkpoint's file content: equal checkpoints give equal bytes, whatever process built them."""
    return torch_bytes(_canonical(ckpt))


# ------------------------------------------------------------------------ the train stage's models
@dataclass(frozen=True)
class TrainJob:
    """One model of the train stage (a walk-forward fold or the final model): everything training
    it needs, picklable, so that it runs alike in the stage's process or in a worker."""

    panel: WindowPanel
    fold: Fold
    params: dict[str, Any]
    data_hash: str
    device: str
    cache: RunCache
    label: str  # its place in the log, e.g. "[2/5]"


@dataclass(frozen=True)
class TrainedModel:
    name: str  # the fold's name: fold_00, ..., final
    checkpoint: bytes  # the model file's content
    metrics: dict[str, float]  # for dvclive, keys under the name: best_val_loss, best_epoch, member_0/...
    epochs: list[EpochLog]  # every epoch of every member, refits included, in training order


def train_job(job: TrainJob) -> TrainedModel:
    """Train one model. Seeds, threads, deterministic kernels and mixed precision are set here,
    so the result depends on the job alone, whichever process runs it and whatever ran before."""
    tcfg, fold = job.params["train"], job.fold
    seed_everything(tcfg["seed"], tcfg["threads"])
    device = torch.device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    epochs: list[EpochLog] = []

    def on_epoch(e: EpochLog) -> None:  # timings go to the log only: they differ from run to run
        epochs.append(e)
        if not e.cached:
            log.info(
                "%s epoch %d: train %.4f val %.4f lr %.2e %.1fs %.0f samples/s %s loss scale %g",
                e.fold,
                e.epoch,
                e.train_loss,
                e.val_loss,
                e.lr,
                e.seconds,
                e.samples_per_s,
                e.amp_dtype,
                e.loss_scale,
            )

    log.info(
        "%s %s: fit %s..%s, val %s..%s, test %s..%s on %s",
        job.label,
        fold.name,
        fold.fit_start,
        fold.fit_end,
        fold.val_start,
        fold.val_end,
        fold.test_start or "-",
        fold.test_end or "-",
        device,
    )
    ckpt = train_fold(
        job.panel,
        fold,
        job.params,
        device,
        resolve_amp(tcfg["amp"], device),
        on_epoch,
        cache=job.cache,
        refit=fold.name == "final" and tcfg["final_refit"],
    )
    metrics = {"best_val_loss": ckpt["best_val_loss"], "best_epoch": ckpt["best_epoch"]}
    if len(ckpt["members"]) > 1:
        for m, (loss, epoch) in enumerate(zip(ckpt["member_best_val_loss"], ckpt["member_best_epoch"], strict=True)):
            metrics |= {f"member_{m}/best_val_loss": loss, f"member_{m}/best_epoch": epoch}
    file = checkpoint_bytes({**ckpt, "params": result_params(job.params), "data_hash": job.data_hash})
    return TrainedModel(fold.name, file, metrics, epochs)


def train_jobs(jobs: list[TrainJob], workers: int) -> Iterator[TrainedModel]:
    """`train_job` of every job, yielded in job order, each as soon as it and those before it are done.

    workers > 1: in that many spawned processes (fork is unsafe once torch runs), the last jobs
    submitted first (the final model and the latest folds train on the most rows). A job's
    error is raised here as it was raised there; jobs not started are cancelled, running ones
    finish (their resume state is kept)."""
    if workers == 1:
        yield from map(train_job, jobs)
        return
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=spawn, initializer=setup_logging) as pool:
        futures = [pool.submit(train_job, job) for job in reversed(jobs)][::-1]
        try:
            for future in futures:
                yield future.result()
        except BrokenProcessPool:
            raise PipelineError(
                f"train: a worker process died (out of memory?) with train.workers={workers}; "
                "lower train.workers, then rerun: finished epochs resume"
            ) from None
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def check_processes(params: dict[str, Any], device: torch.device) -> None:
    """train.workers and torchrun: a clear error for what cannot run, a warning when the training
    processes on this machine ask for more threads than it has cores (a large slow-down)."""
    tcfg, arch, world = params["train"], params["model"]["arch"], distributed.launched_world()
    if world > 1 and tcfg["workers"] > 1:
        raise PipelineError(
            f"train.workers={tcfg['workers']} under torchrun (WORLD_SIZE={world}): the two do not "
            "combine; set train.workers=1 to train each model on all ranks"
        )
    if world > 1 and REGISTRY[arch].family != "torch":
        raise PipelineError(
            f"model.arch={arch} is not a torch network and cannot train data-parallel under torchrun "
            f"(WORLD_SIZE={world}); run python -m stages.train"
        )
    processes = tcfg["workers"] * distributed.local_processes()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    first = distributed.local_rank() == 0  # one warning per machine, not one per rank
    if first and device.type == "cpu" and processes > 1 and processes * (tcfg["threads"] or cores) > cores:
        log.warning(
            "%d training processes x train.threads=%d threads on %d cores: oversubscribed, expect a large "
            "slow-down; lower train.threads (it is part of bit-identical runs) or the processes",
            processes,
            tcfg["threads"],
            cores,
        )


def load_checkpoint(path: Path) -> tuple[Ensemble, dict[str, Any]]:
    """Load a model file (`checkpoint_bytes`); a missing, truncated or foreign file is one clear error."""
    if not path.exists():
        raise PipelineError(f"{path}: model not found (run the train stage)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = Ensemble(
            [
                restore(ckpt["model"], state, n_features=len(ckpt["features"]), seq_len=ckpt["seq_len"])
                for state in ckpt["members"]
            ]
        )
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged archive
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"{path}: not a readable model checkpoint ({reason}); rerun the train stage (dvc repro -f train)"
        ) from None
    return model, ckpt


def check_checkpoint(ckpt: dict[str, Any], path: Path, params: dict[str, Any], data_hash: str) -> None:
    """The model must come from the params and data that the caller reads, or its predictions mean nothing."""
    kept = result_params(params)
    for section in ("features", "walk_forward", "model", "train"):
        saved, now = ckpt["params"].get(section, {}), kept[section]
        for key in now:
            if saved.get(key) != now[key]:
                raise PipelineError(
                    f"{path} was trained with {section}.{key}={saved.get(key)!r} but params.yaml has {now[key]!r}; "
                    "retrain (dvc repro), or restore the params it was trained with"
                )
    if ckpt["data_hash"] != data_hash:
        raise PipelineError(
            f"{path} was trained on other features (sha256 {ckpt['data_hash'][:12]}..., "
            f"the file now has {data_hash[:12]}...); retrain (dvc repro)"
        )


def predict_rows(
    model: Ensemble, ckpt: dict[str, Any], panel: WindowPanel, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label at anchor `rows` (a log return; with the checkpoint's `label_norm` other than none,
    a per-date score in that space), with the checkpoint's own scaler: the ensemble mean and each
    member's prediction (n_members, rows)."""
    if panel.features != ckpt["features"] or panel.seq_len != ckpt["seq_len"]:
        raise PipelineError("predict: the features or window length differ from the model's; rerun train")
    x = torch.from_numpy(
        panel.scaled(np.asarray(ckpt["scaler_mean"]), np.asarray(ckpt["scaler_scale"]), ckpt["feature_clip"])
    )
    mean, each = model.predict(x, torch.from_numpy(rows))
    return mean * ckpt["label_std"] + ckpt["label_mean"], each * ckpt["label_std"] + ckpt["label_mean"]

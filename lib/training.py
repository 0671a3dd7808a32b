"""A fold's training (ensemble members, the final refit) and self-describing checkpoints.

The loop itself lives in lib/loop.py, the models behind one contract in lib/models.py."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.dataset import Panel
from lib.errors import PipelineError
from lib.loop import (  # noqa: F401 - re-exported: the stages and tests import the loop's API from here
    Amp,
    EpochLog,
    RunCache,
    loss_fn,
    resolve_amp,
    resolve_device,
    save_torch,
    seed_everything,
)
from lib.models import Ensemble, FoldData, build, restore
from lib.walk_forward import Fold

log = logging.getLogger(__name__)


def _fold_data(panel: Panel, start: str, end: str, fit_idx: np.ndarray, val_idx: np.ndarray,
               tcfg: dict[str, Any], device: torch.device) -> tuple[FoldData, dict[str, Any]]:
    """Scale on the rows dated in [start, end] (the fit rows' dates), standardise labels on the fit rows."""
    scaler = panel.fit_scaler(start, end)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    label_mean, label_std = float(panel.labels[fit_idx].mean()), float(panel.labels[fit_idx].std()) or 1.0
    x = torch.from_numpy(panel.scaled(scaler.mean_, scale, tcfg["feature_clip"])).to(device)
    y = torch.from_numpy(((np.nan_to_num(panel.labels) - label_mean) / label_std).astype(np.float32)).to(device)
    data = FoldData(x, y, torch.from_numpy(fit_idx).to(device), torch.from_numpy(val_idx).to(device), panel.seq_len)
    return data, {"scaler_mean": scaler.mean_.tolist(), "scaler_scale": scale.tolist(),
                  "feature_clip": tcfg["feature_clip"], "label_mean": label_mean, "label_std": label_std}


def _span(panel: Panel, rows: np.ndarray) -> dict[str, Any]:
    d = panel.dates[rows]
    return {"start": str(np.datetime_as_string(d.min(), "D")), "end": str(np.datetime_as_string(d.max(), "D")),
            "rows": len(rows)}


def member_tag(fold: str, i: int, n: int) -> str:
    return fold if n == 1 else f"{fold}/m{i}"


def train_fold(panel: Panel, fold: Fold, params: dict[str, Any], device: torch.device, amp: Amp,
               on_epoch: Callable[[EpochLog], None], cache: RunCache | None = None,
               refit: bool = False) -> dict[str, Any]:
    """Train `model.ensemble` members (seeds seed, seed+1, ...) on the fold with early stopping
    on its validation rows; return a self-describing checkpoint holding every member.

    `refit` (the final model with train.final_refit): then train each member afresh on every
    labelled row of the fold (fit + purge + validation) for the epochs validation chose."""
    tcfg, mcfg = params["train"], params["model"]
    n_members = mcfg["ensemble"]
    fit_idx = panel.rows(fold.fit_start, fold.fit_end, labelled=True, stride=tcfg["sample_stride"],
                         labels_before=fold.val_start)
    val_idx = panel.rows(fold.val_start, fold.val_end, labelled=True, labels_before=fold.labels_before)
    if len(fit_idx) == 0 or len(val_idx) == 0:
        raise PipelineError(f"train: {fold.name} has {len(fit_idx)} training and {len(val_idx)} validation samples; "
                            "lower model.seq_len or walk_forward.folds")
    data, scaling = _fold_data(panel, fold.fit_start, fold.fit_end, fit_idx, val_idx, tcfg, device)
    seeds = [tcfg["seed"] + i for i in range(n_members)]
    members, results = [], []
    for i, seed in enumerate(seeds):
        model = build(mcfg, tcfg, n_features=len(panel.features), seq_len=panel.seq_len, seed=seed, amp=amp)
        results.append(model.fit(data, tag=member_tag(fold.name, i, n_members), on_epoch=on_epoch, cache=cache))
        members.append(model)
    best_val = results[0].best_val_loss
    if n_members > 1:  # the ensemble's own validation loss: what averaging bought
        mean_val, _ = Ensemble(members).predict(data.x, data.val_rows)
        best_val = float(loss_fn(tcfg)(torch.from_numpy(mean_val).float(), data.y[data.val_rows].float().cpu()))
    trained_on = _span(panel, fit_idx)
    if refit:
        all_idx = panel.rows(fold.fit_start, fold.val_end, labelled=True, stride=tcfg["sample_stride"])
        data, scaling = _fold_data(panel, fold.fit_start, fold.val_end, all_idx, np.zeros(0, np.int64), tcfg, device)
        members = []
        for i, (seed, res) in enumerate(zip(seeds, results, strict=True)):
            model = build(mcfg, tcfg, n_features=len(panel.features), seq_len=panel.seq_len, seed=seed, amp=amp)
            model.fit(data, tag=f"{member_tag(fold.name, i, n_members)}/refit", on_epoch=on_epoch,
                      cache=cache, epochs=res.epochs_run if model.family == "sklearn" else res.best_epoch + 1)
            members.append(model)
        trained_on = _span(panel, all_idx)
        log.info("%s: refit on %d labelled rows %s..%s for %s epoch(s)", fold.name, len(all_idx),
                 trained_on["start"], trained_on["end"], [r.best_epoch + 1 for r in results])
    best_epoch = max(r.best_epoch for r in results)
    log.info("%s: best epoch %s of %s, validation loss %.4f, %d fit / %d val samples", fold.name,
             [r.best_epoch for r in results], [r.epochs_run for r in results], best_val, len(fit_idx), len(val_idx))
    return {
        "arch": mcfg["arch"], "family": members[0].family, "model": mcfg,
        "members": [m.state() for m in members], "member_seeds": seeds,
        "member_best_epoch": [r.best_epoch for r in results],
        "member_best_val_loss": [r.best_val_loss for r in results],
        "features": panel.features, "seq_len": panel.seq_len, **scaling, "fold": fold.as_dict(),
        "best_epoch": best_epoch, "best_val_loss": best_val, "epochs_run": max(r.epochs_run for r in results),
        "final_refit": refit, "trained_on": trained_on, "n_fit": len(fit_idx), "n_val": len(val_idx),
        "device": device.type, "amp_dtype": amp.name, "torch": str(torch.__version__),
    }


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Write a checkpoint; identical checkpoints give identical bytes wherever they are saved."""
    save_torch(ckpt, path)


def load_checkpoint(path: Path) -> tuple[Ensemble, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`; a missing, truncated or foreign file is one clear error."""
    if not path.exists():
        raise PipelineError(f"{path}: model not found (run the train stage)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = Ensemble([restore(ckpt["model"], state, n_features=len(ckpt["features"]), seq_len=ckpt["seq_len"])
                          for state in ckpt["members"]])
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged archive
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a readable model checkpoint ({reason}); rerun the train stage "
                            "(dvc repro -f train)") from None
    return model, ckpt


def check_checkpoint(ckpt: dict[str, Any], path: Path, params: dict[str, Any], data_hash: str) -> None:
    """The model must come from the params and data that the caller reads, or its predictions mean nothing."""
    for section in ("features", "walk_forward", "model", "train"):
        saved, now = ckpt["params"].get(section, {}), params[section]
        for key in now:
            if saved.get(key) != now[key]:
                raise PipelineError(
                    f"{path} was trained with {section}.{key}={saved.get(key)!r} but params.yaml has {now[key]!r}; "
                    "retrain (dvc repro), or restore the params it was trained with")
    if ckpt["data_hash"] != data_hash:
        raise PipelineError(f"{path} was trained on other features (sha256 {ckpt['data_hash'][:12]}..., "
                            f"the file now has {data_hash[:12]}...); retrain (dvc repro)")


def predict_rows(model: Ensemble, ckpt: dict[str, Any], panel: Panel,
                 rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label (log return) at anchor `rows`, with the checkpoint's own scaler: the
    ensemble mean and each member's prediction (n_members, rows)."""
    if panel.features != ckpt["features"] or panel.seq_len != ckpt["seq_len"]:
        raise PipelineError("predict: the features or window length differ from the model's; rerun train")
    x = torch.from_numpy(panel.scaled(np.asarray(ckpt["scaler_mean"]), np.asarray(ckpt["scaler_scale"]),
                                      ckpt["feature_clip"]))
    mean, each = model.predict(x, torch.from_numpy(rows))
    return mean * ckpt["label_std"] + ckpt["label_mean"], each * ckpt["label_std"] + ckpt["label_mean"]

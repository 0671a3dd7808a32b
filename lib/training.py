"""Seeds and devices, mixed precision, the training loop with early stopping, checkpoints."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.dataset import Panel, windows
from lib.errors import PipelineError
from lib.io import write_bytes
from lib.models import build_model
from lib.walk_forward import Fold

log = logging.getLogger(__name__)
EVAL_BATCH = 4096


def seed_everything(seed: int, threads: int) -> None:
    """Fixed seeds and deterministic kernels: same params and data give the same bits on CPU."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Amp:
    """Mixed-precision set-up: autocast dtype (None: float32) and a GradScaler for float16."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        # oneDNN has no bfloat16 LSTM kernel on CPUs without bf16 units; the plain kernel runs (slowly).
        off = torch.backends.mkldnn.flags(enabled=False) if self.device.type == "cpu" else contextlib.nullcontext()
        with off, torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def loss_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0


def resolve_amp(mode: str, device: torch.device) -> Amp:
    """`auto`: float16 + GradScaler on CUDA, float32 on CPU. `on`: float16 on CUDA, bfloat16 on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return Amp(device, None, None)
    if device.type == "cuda":
        return Amp(device, torch.float16, torch.amp.GradScaler("cuda"))
    return Amp(device, torch.bfloat16, None)


@dataclass(frozen=True)
class EpochLog:
    fold: str
    epoch: int
    train_loss: float
    val_loss: float
    lr: float
    seconds: float
    samples_per_s: float
    amp_dtype: str
    loss_scale: float


def _loss_fn(cfg: dict[str, Any]) -> nn.Module:
    return nn.HuberLoss(delta=cfg["huber_delta"]) if cfg["loss"] == "huber" else nn.MSELoss()


@torch.inference_mode()
def _predict_scaled(model: nn.Module, x: torch.Tensor, rows: torch.Tensor, seq_len: int, amp: Amp) -> torch.Tensor:
    model.eval()
    parts = []
    with amp.autocast():
        for b in range(0, len(rows), EVAL_BATCH):
            parts.append(model(windows(x, rows[b:b + EVAL_BATCH], seq_len)).float())
    return torch.cat(parts) if parts else torch.empty(0, device=x.device)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fit_rows: torch.Tensor, val_rows: torch.Tensor,
        seq_len: int, cfg: dict[str, Any], amp: Amp, tag: str,
        on_epoch: Callable[[EpochLog], None]) -> tuple[int, float, int]:
    """Train with early stopping on the validation rows; reload the best epoch's weights.

    Returns (best_epoch, best_val_loss, epochs_run)."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["epochs"]) if cfg["lr_schedule"] == "cosine" else None
    loss_fn = _loss_fn(cfg)
    n, bs = len(fit_rows), cfg["batch_size"]
    best = (math.inf, -1, copy.deepcopy(model.state_dict()))
    for epoch in range(cfg["epochs"]):
        start = time.perf_counter()
        model.train()
        order = fit_rows[torch.randperm(n, generator=gen).to(fit_rows.device)]
        total = torch.zeros((), device=x.device)
        for b in range(0, n, bs):
            rows = order[b:b + bs]
            with amp.autocast():
                loss = loss_fn(model(windows(x, rows, seq_len)).float(), y[rows])
            opt.zero_grad(set_to_none=True)
            if amp.scaler is not None:
                amp.scaler.scale(loss).backward()
                amp.scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            if amp.scaler is not None:
                amp.scaler.step(opt)
                amp.scaler.update()
            else:
                opt.step()
            total += loss.detach() * len(rows)
        train_loss = float(total) / n
        val_loss = float(loss_fn(_predict_scaled(model, x, val_rows, seq_len, amp), y[val_rows]))
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise PipelineError(f"train: loss is not finite in {tag} epoch {epoch}; lower train.lr or set train.grad_clip")
        seconds = time.perf_counter() - start
        on_epoch(EpochLog(tag, epoch, train_loss, val_loss, opt.param_groups[0]["lr"], seconds, n / seconds,
                          amp.name, amp.loss_scale()))
        if sched is not None:
            sched.step()
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg["patience"]:
            break
    model.load_state_dict(best[2])
    return best[1], best[0], epoch + 1


def train_fold(panel: Panel, fold: Fold, params: dict[str, Any], device: torch.device, amp: Amp,
               on_epoch: Callable[[EpochLog], None]) -> dict[str, Any]:
    """Scale on the fold's fit rows, train, and return a self-describing checkpoint."""
    tcfg, mcfg = params["train"], params["model"]
    fit_idx = panel.rows(fold.fit_start, fold.fit_end, labelled=True, stride=tcfg["sample_stride"],
                         labels_before=fold.val_start)
    val_idx = panel.rows(fold.val_start, fold.val_end, labelled=True, labels_before=fold.labels_before)
    if len(fit_idx) == 0 or len(val_idx) == 0:
        raise PipelineError(f"train: {fold.name} has {len(fit_idx)} training and {len(val_idx)} validation samples; "
                            "lower model.seq_len or walk_forward.folds")
    scaler = panel.fit_scaler(fold.fit_start, fold.fit_end)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    label_mean, label_std = float(panel.labels[fit_idx].mean()), float(panel.labels[fit_idx].std()) or 1.0
    x = torch.from_numpy(panel.scaled(scaler.mean_, scale, tcfg["feature_clip"])).to(device)
    y = torch.from_numpy(((np.nan_to_num(panel.labels) - label_mean) / label_std).astype(np.float32)).to(device)
    torch.manual_seed(tcfg["seed"])
    model = build_model(mcfg, len(panel.features)).to(device)
    best_epoch, best_val, epochs_run = fit(
        model, x, y, torch.from_numpy(fit_idx).to(device), torch.from_numpy(val_idx).to(device),
        panel.seq_len, tcfg, amp, fold.name, on_epoch)
    log.info("%s: best epoch %d of %d, validation loss %.4f, %d fit / %d val samples",
             fold.name, best_epoch, epochs_run, best_val, len(fit_idx), len(val_idx))
    return {
        "arch": mcfg["arch"], "model": mcfg, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "features": panel.features, "seq_len": panel.seq_len, "scaler_mean": scaler.mean_.tolist(),
        "scaler_scale": scale.tolist(), "feature_clip": tcfg["feature_clip"], "label_mean": label_mean,
        "label_std": label_std, "fold": fold.as_dict(), "best_epoch": best_epoch, "best_val_loss": best_val,
        "epochs_run": epochs_run, "n_fit": len(fit_idx), "n_val": len(val_idx), "device": device.type,
        "amp_dtype": amp.name, "torch": str(torch.__version__),
    }


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Serialise in memory, then write atomically: torch.save names the archive after the file it
    writes to, so saving straight to a temporary file would put a random name in the bytes."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    write_bytes(buffer.getvalue(), path)


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`; a missing, truncated or foreign file is one clear error."""
    if not path.exists():
        raise PipelineError(f"{path}: model not found (run the train stage)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(ckpt["model"], len(ckpt["features"]))
        model.load_state_dict(ckpt["state_dict"])
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


def predict_rows(model: nn.Module, ckpt: dict[str, Any], panel: Panel, rows: np.ndarray) -> np.ndarray:
    """Predicted label (log return) at anchor `rows`, with the checkpoint's own scaler."""
    if panel.features != ckpt["features"] or panel.seq_len != ckpt["seq_len"]:
        raise PipelineError("predict: the features or window length differ from the model's; rerun train")
    x = torch.from_numpy(panel.scaled(np.asarray(ckpt["scaler_mean"]), np.asarray(ckpt["scaler_scale"]),
                                      ckpt["feature_clip"]))
    out = _predict_scaled(model, x, torch.from_numpy(rows), ckpt["seq_len"], Amp(torch.device("cpu"), None, None))
    return out.double().numpy() * ckpt["label_std"] + ckpt["label_mean"]

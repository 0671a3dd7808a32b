"""The torch training loop: seeds and devices, mixed precision, LR schedules with warm-up,
gradient accumulation, early stopping, a tqdm bar, and per-epoch resumable state.

Resumable state lives in a cache folder (`RunCache`) that the train stage keys by the params
that matter and the features' sha256; it is written atomically after every completed epoch,
so a run killed at any point resumes from the last completed epoch and ends with the same
bits as an uninterrupted run on CPU (model, optimizer, schedule, grad scaler, both RNGs and
the early-stopping state are all restored).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.errors import PipelineError
from lib.io import write_bytes
from lib.ml import distributed
from lib.ml.panel import windows
from lib.params import result_params

log = logging.getLogger(__name__)
EVAL_BATCH = 4096


# The training code (lib/) and the variables that change which kernels run: part of the resume key.
TRAINING_CODE = ("fit.py", "models.py", "trainer.py", "distributed.py", "panel.py")
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE",
              "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "NPY_DISABLE_CPU_FEATURES")


def openmp_static() -> None:
    """Dynamic team sizes off in every OpenMP runtime loaded in this process (torch's libgomp;
    scikit-learn's once imported). With OMP_DYNAMIC=true libgomp gives a parallel region fewer
    threads than asked when the load average is high, and a reduction split over fewer threads
    rounds differently: the bits would follow the machine's load."""
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().select(user_api="openmp").lib_controllers:
        lib.dynlib.omp_set_dynamic(0)


def deterministic_runtime(threads: int) -> None:
    """The process-wide set-up behind bit-identical runs, the one place train and predict call
    (`seed_everything` adds the seeds):

    * deterministic algorithms, strictly: an op without a deterministic implementation raises
      (warn_only=True let it run with a warning, e.g. put_ or max_unpool on CPU); no op of the six
      models needs the leniency (tests/test_determinism.py). Uninitialised memory from torch.empty
      is filled, so that reading it shows.
    * a fixed intra-op thread count (`threads`; 0: the count torch has now): torch splits a
      parallel reduction by it (a large sum on 1, 2 or 3 threads differs in the last bits), never by
      load. torch.set_num_threads is always called, as it also turns MKL's dynamic threading off
      (MKL_DYNAMIC, on by default, lets MKL choose the thread count at run time).
    * OpenMP teams of exactly that size (`openmp_static`).
    * CUDA: a fixed cuBLAS workspace and no cuDNN autotuning.
    The inter-op pool is left alone: eager training never uses it (no torch.jit.fork)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads if threads > 0 else torch.get_num_threads())
    openmp_static()
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.utils.deterministic.fill_uninitialized_memory = True
    torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def native_threads(threads: int) -> Iterator[None]:
    """numpy's, scipy's and scikit-learn's thread pools (OpenBLAS, OpenMP) held to `threads` for the
    block (0: as they are), with static OpenMP teams: scikit-learn's Ridge gives other coefficients
    on 1, 2 or 4 BLAS threads, so its fit must not run on however many cores the machine has."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads or None):
        openmp_static()
        yield


def seed_everything(seed: int, threads: int) -> None:
    """Fixed seeds on a deterministic runtime: same params and data give the same bits on CPU."""
    deterministic_runtime(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


def runtime_fingerprint() -> dict[str, str]:
    """What decides a trained weight's bits besides the params and the data: the training code,
    the CPU (torch, oneDNN and MKL pick kernels by its instruction set: oneDNN's LSTM held to AVX2
    rounds most of a fold's predictions differently, by ~1e-9) and the variables that override it."""
    here = Path(__file__).resolve().parent
    code = hashlib.sha256(b"".join((here / name).read_bytes() for name in TRAINING_CODE)).hexdigest()
    cpu = platform.machine() + " " + platform.processor()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = " | ".join(next((ln for ln in lines if ln.startswith(k)), "") for k in ("model name", "flags"))
    return {"code": code, "cpu": hashlib.sha256(cpu.encode()).hexdigest()[:16],
            "capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Amp:
    """Mixed-precision set-up: autocast dtype (None: float32) and a GradScaler (enabled for float16 only)."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        # oneDNN has no bfloat16 LSTM kernel on CPUs without bf16 units; the plain kernel runs (slowly).
        cpu_bf16 = self.dtype is not None and self.device.type == "cpu"
        off = torch.backends.mkldnn.flags(enabled=False) if cpu_bf16 else contextlib.nullcontext()
        with off, torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            yield

    def loss_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0


def resolve_amp(mode: str, device: torch.device) -> Amp:
    """`auto`: float16 + GradScaler on CUDA, float32 on CPU. `on`: float16 on CUDA, bfloat16 on CPU."""
    dtype = None
    if mode == "on" or (mode == "auto" and device.type == "cuda"):
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return Amp(device, dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16))


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
    cached: bool = False  # replayed from the resume cache (timings are not known)


def loss_fn(cfg: dict[str, Any]) -> nn.Module:
    return nn.HuberLoss(delta=cfg["huber_delta"]) if cfg["loss"] == "huber" else nn.MSELoss()


class Schedule:
    """Learning rate per epoch: constant | cosine | onecycle | plateau, times a linear warm-up.

    Closed forms of the epoch (no recursion), so a resumed run sets exactly the same rates.
    onecycle rises from lr/25 to lr over the first 30 % of epochs, then falls to lr/1e4;
    plateau multiplies the rate by `plateau_factor` after `plateau_patience` epochs without a
    better validation loss. Warm-up scales epoch e < warmup_epochs by (e+1)/(warmup_epochs+1)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.scale, self.bad, self.best = 1.0, 0, math.inf

    def lr(self, epoch: int) -> float:
        c = self.cfg
        kind, total = c["lr_schedule"], c["epochs"]
        if kind == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * epoch / total))
        elif kind == "onecycle":
            up = max(1, round(0.3 * total))
            if epoch < up:
                f = 1 / 25 + (1 - 1 / 25) * 0.5 * (1.0 - math.cos(math.pi * epoch / up))
            else:
                f = 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * (epoch - up) / max(1, total - 1 - up)))
        elif kind == "plateau":
            f = self.scale
        else:
            f = 1.0
        if epoch < c["warmup_epochs"]:
            f *= (epoch + 1) / (c["warmup_epochs"] + 1)
        return c["lr"] * f

    def observe(self, val_loss: float) -> None:
        if self.cfg["lr_schedule"] != "plateau" or not math.isfinite(val_loss):
            return
        if val_loss < self.best:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad >= self.cfg["plateau_patience"]:
                self.scale, self.bad = self.scale * self.cfg["plateau_factor"], 0

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "bad": self.bad, "best": self.best}

    def load_state_dict(self, s: dict[str, float]) -> None:
        self.scale, self.bad, self.best = s["scale"], int(s["bad"]), s["best"]


def torch_bytes(obj: Any) -> bytes:
    """torch.save to memory: torch.save names the archive after the file it writes to, so saving
    straight to a temporary file would put a random name in the bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch(obj: Any, path: Path) -> None:
    """`torch_bytes`, written atomically."""
    write_bytes(torch_bytes(obj), path)


class RunCache:
    """Per-epoch training state, one file per run tag (`fold_00`, `fold_00/m1`, `final/refit`)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @classmethod
    def for_run(cls, root: Path, params: dict[str, Any], data_hash: str, device: str) -> RunCache:
        """The folder under `root` keyed by everything that changes a trained weight (the model,
        train and walk_forward params but train.workers, the features' sha256, device, torch
        version, DDP world size, and `runtime_fingerprint`: the training code and the CPU), so a
        changed config, edited code or another machine never resumes stale state (which would
        mix another run's bits into the first folds, the ones a killed run leaves); the folders
        of other configs are removed."""
        kept = result_params(params)
        what = {s: kept[s] for s in ("model", "train", "walk_forward")} | {
            "data": data_hash, "device": device, "torch": str(torch.__version__),
            "world_size": distributed.world_size(), "runtime": runtime_fingerprint()}
        folder = root / hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]
        for stale in root.glob("*") if root.is_dir() else []:
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
        return cls(folder)

    def _path(self, tag: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{tag.replace('/', '.')}.pt"

    def load(self, tag: str) -> dict[str, Any] | None:
        if self.folder is None or not self._path(tag).exists():
            return None
        try:
            return torch.load(self._path(tag), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file only costs a restart of that run
            log.warning("%s: unreadable resume state (%s); training %s from scratch", self._path(tag), exc, tag)
            return None

    def save(self, tag: str, state: dict[str, Any]) -> None:
        if self.folder is not None:
            save_torch(state, self._path(tag))


@torch.inference_mode()
def predict_scaled(model: nn.Module, x: torch.Tensor, rows: torch.Tensor, seq_len: int, amp: Amp) -> torch.Tensor:
    model.eval()
    parts = []
    with amp.autocast():
        for b in range(0, len(rows), EVAL_BATCH):
            parts.append(model(windows(x, rows[b:b + EVAL_BATCH], seq_len)).float())
    return torch.cat(parts) if parts else torch.empty(0, device=x.device)


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def fit_torch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fit_rows: torch.Tensor, val_rows: torch.Tensor,
              seq_len: int, cfg: dict[str, Any], amp: Amp, tag: str, on_epoch: Callable[[EpochLog], None],
              seed: int, epochs: int | None = None, cache: RunCache | None = None) -> tuple[int, float, int]:
    """Train; with validation rows, stop early and reload the best epoch's weights; without
    (a refit), run exactly `epochs` epochs and keep the last weights.

    One optimizer step per `batch_size * accumulate` rows; each micro-batch's mean loss is
    weighted by its share of the step's rows, so the step equals one on the large batch.
    Under torchrun both sizes are global: the ranks split each step's rows (lib/ml/distributed.py).
    Returns (best_epoch, best_val_loss, epochs_run)."""
    cache = cache or RunCache(None)
    validate = len(val_rows) > 0
    n_epochs = epochs if epochs is not None else cfg["epochs"]
    gen = torch.Generator().manual_seed(seed)
    net = distributed.wrap(model)
    world = distributed.world_size()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    schedule = Schedule(cfg)
    lossf = loss_fn(cfg)
    n, micro = len(fit_rows), math.ceil(cfg["batch_size"] / world)  # a rank's share of a micro-batch
    step_rows = cfg["batch_size"] * cfg["accumulate"]
    best_val, best_epoch, best_state = math.inf, -1, _clone(model.state_dict())
    start_epoch, done, history = 0, False, []
    distributed.seed_rank(seed)
    saved = distributed.broadcast(cache.load(tag))  # rank 0 holds the resume state
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        schedule.load_state_dict(saved["schedule"])
        if saved["scaler"]:
            amp.scaler.load_state_dict(saved["scaler"])
        gen.set_state(saved["gen"])
        torch.set_rng_state(saved["rng"][distributed.rank()])
        if x.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"][distributed.rank()], x.device)
        best_val, best_epoch, best_state = saved["best_val"], saved["best_epoch"], saved["best_state"]
        start_epoch, done, history = saved["next_epoch"], saved["done"], saved["history"]
        log.info("resumed %s at epoch %d%s", tag, start_epoch, " (finished)" if done else "")
        for h in history:
            on_epoch(EpochLog(**{**h, "seconds": math.nan, "samples_per_s": math.nan, "cached": True}))
    interactive = sys.stderr.isatty() and distributed.is_main()
    with tqdm(total=n_epochs, initial=start_epoch, desc=tag, unit="epoch", disable=not interactive or done,
              leave=False) as bar:
        for epoch in range(start_epoch, n_epochs):
            if done:
                break
            t0 = time.perf_counter()
            lr = schedule.lr(epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            net.train()
            order = fit_rows[torch.randperm(n, generator=gen).to(fit_rows.device)]
            total = torch.zeros((), device=x.device)
            with tqdm(total=n, unit="sample", leave=False, disable=not interactive) as batches:
                for g in range(0, n, step_rows):
                    group_rows = order[g:g + step_rows]
                    parts = distributed.micro_batches(group_rows, micro)
                    opt.zero_grad(set_to_none=True)
                    for i, (rows, counted) in enumerate(parts):
                        with distributed.no_sync(net, accumulate=i < len(parts) - 1):
                            with amp.autocast():
                                loss = lossf(net(windows(x, rows, seq_len)).float(), y[rows])
                            share = counted * world / len(group_rows)
                            amp.scaler.scale(loss if share == 1 else loss * share).backward()
                        total += loss.detach() * counted
                    batches.update(len(group_rows))
                    amp.scaler.unscale_(opt)
                    if cfg["grad_clip"] > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                    amp.scaler.step(opt)
                    amp.scaler.update()
            train_loss = float(distributed.all_reduce_sum(total)) / n
            val_loss = math.nan
            if validate:  # every rank computes it; rank 0's value decides early stopping everywhere
                pred = predict_scaled(model, x, val_rows, seq_len, amp)
                val_loss = distributed.broadcast(float(lossf(pred, y[val_rows])))
            if not math.isfinite(train_loss) or (validate and not math.isfinite(val_loss)):
                raise PipelineError(f"train: loss is not finite in {tag} epoch {epoch}; "
                                    "lower train.lr or set train.grad_clip")
            seconds = time.perf_counter() - t0
            entry = EpochLog(tag, epoch, train_loss, val_loss, lr, seconds, n / seconds, amp.name, amp.loss_scale())
            on_epoch(entry)
            history.append({k: v for k, v in asdict(entry).items() if k not in ("seconds", "samples_per_s", "cached")})
            schedule.observe(val_loss)
            if not validate:
                best_epoch, best_val = epoch, math.nan
            elif val_loss < best_val:
                best_val, best_epoch, best_state = val_loss, epoch, _clone(model.state_dict())
            done = epoch + 1 >= n_epochs or (validate and epoch - best_epoch >= cfg["patience"])
            cache.save(tag, {  # the RNG states of every rank, in rank order
                "model": model.state_dict(), "opt": opt.state_dict(), "schedule": schedule.state_dict(),
                "scaler": amp.scaler.state_dict(), "gen": gen.get_state(),
                "rng": distributed.all_gather(torch.get_rng_state()),
                "cuda_rng": distributed.all_gather(torch.cuda.get_rng_state(x.device)) if x.device.type == "cuda"
                else None,
                "best_val": best_val, "best_epoch": best_epoch, "best_state": best_state,
                "next_epoch": epoch + 1, "done": done, "history": history})
            bar.update(1)
    if validate:
        model.load_state_dict(best_state)
    epochs_run = len(history)
    return best_epoch, best_val, epochs_run

"""The torch runtime a fit runs in: determinism (strict algorithms, fixed threads, static OpenMP
teams, native pools for numpy and sklearn), seeds, the device, mixed precision, and the fingerprint
of code and CPU that keys resumable state (a trained weight's bits depend on both).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.errors import PipelineError

# The training code (lib/) and the variables that change which kernels run: part of the resume key.
TRAINING_CODE = (
    "fit.py",
    "runtime.py",
    "schedule.py",
    "models.py",
    "trainer.py",
    "distributed.py",
    "panel.py",
    "by_date.py",
)
KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "NPY_DISABLE_CPU_FEATURES",
)


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
    return {
        "code": code,
        "cpu": hashlib.sha256(cpu.encode()).hexdigest()[:16],
        "capability": torch.backends.cpu.get_cpu_capability(),
        **{k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }


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

"""The deterministic runtime (lib/ml/runtime.py `deterministic_runtime`): strict deterministic algorithms,
a fixed thread count with static OpenMP teams, a resume key that knows the code and the CPU; and
training that gives the same bytes run after run, in another process and with the CPU busy."""

from __future__ import annotations

import functools
import hashlib
import itertools
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from lib.ml.fit import RunCache
from lib.ml.folds import Fold
from lib.ml.runtime import deterministic_runtime, native_threads, runtime_fingerprint
from lib.params import validate_params
from tests.helpers import gbm_bars, small_params

THREADS = 2
FOLD = Fold("fold_00", "2020-09-01", "2021-06-30", "2021-07-15", "2021-10-31", "2021-11-10", "2022-02-28", "2021-11-10")
# A busy core: numpy matmuls on one BLAS thread (one of the two torch threads shares its core) until
# killed, or after 5 minutes or once its parent is gone, so that it never outlives a killed test.
BURN = (
    "import os, time\nimport numpy as np\nparent, end = os.getppid(), time.monotonic() + 300\n"
    "a = np.random.default_rng(0).normal(size=(300, 300))\n"
    "while os.getppid() == parent and time.monotonic() < end:\n    a = np.tanh(a @ a / 300)\n"
)
_FILES = itertools.count()


def _openmp_libs():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp").lib_controllers


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_runtime_is_strict_and_its_teams_static(keep_threads):
    """After the set-up: deterministic algorithms with no warn-only leniency (a nondeterministic CPU
    op raises), the thread count asked, and no OpenMP runtime allowed to shrink a team by load
    (as OMP_DYNAMIC=true would), whatever the process had set before."""
    torch.use_deterministic_algorithms(True, warn_only=True)  # the lenient set-up this replaced
    for lib in _openmp_libs():
        lib.dynlib.omp_set_dynamic(1)
    deterministic_runtime(1)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled() is False
    assert torch.utils.deterministic.fill_uninitialized_memory
    assert torch.get_num_threads() == 1
    assert _openmp_libs() and all(lib.dynlib.omp_get_dynamic() == 0 for lib in _openmp_libs())
    with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
        torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))  # which write wins is a race
    deterministic_runtime(0)  # 0: keep torch's count, still strict
    assert torch.get_num_threads() == 1 and torch.is_deterministic_algorithms_warn_only_enabled() is False


def test_native_pools_take_the_thread_count_for_the_block():
    from threadpoolctl import threadpool_info

    with native_threads(1):
        assert {i["num_threads"] for i in threadpool_info()} == {1}


def test_resume_state_is_keyed_by_the_code_and_the_cpu(tmp_path, monkeypatch):
    """A killed run's state resumes only under the same code and kernels: state from other code or
    another CPU would silently mix its bits into the folds it left (fold_00 first)."""
    p = small_params()
    first = RunCache.for_run(tmp_path, p, "abc", "cpu").folder
    assert RunCache.for_run(tmp_path, p, "abc", "cpu").folder == first
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's kernels of a CPU without AVX-512
    assert RunCache.for_run(tmp_path, p, "abc", "cpu").folder != first
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr("lib.ml.runtime.TRAINING_CODE", ("fit.py",))  # other training code
    assert RunCache.for_run(tmp_path, p, "abc", "cpu").folder != first
    fp = runtime_fingerprint()
    assert fp["capability"] == torch.backends.cpu.get_cpu_capability() and len(fp["code"]) == 64


# ------------------------------------------------------------------------------------- under stress
@functools.cache
def _panel():
    from lib.data.features import build_features
    from lib.ml.panel import WindowPanel

    return WindowPanel.from_frame(build_features(gbm_bars(600, ("A", "B", "C", "D")), small_params()["features"]), 15)


def _params() -> dict:
    """Big enough that the kernels split their work over both threads; dropout draws from the RNG."""
    p = small_params()
    p["model"].update(arch="lstm", hidden=24, layers=2, dropout=0.2, seq_len=15)
    p["train"].update(epochs=2, patience=2, batch_size=256, threads=THREADS)
    return validate_params(p)


def _reduction(threads: int) -> bytes:
    """A sum large enough that torch splits it over the threads: its last bits follow the size of
    the OpenMP team that computed it, so a team shrunk by load would show here."""
    deterministic_runtime(threads)
    x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0)) * 1e3
    return x.sum().numpy().tobytes()


def _train_and_predict(folder: str) -> tuple[str, str, bytes]:
    """The train stage's entry for one model (seeds, threads, strict kernels), then the predict
    stage's path on its file: sha256 of the model file and of the predictions, and `_reduction`."""
    from lib.ml.trainer import RunCache, TrainJob, load_checkpoint, predict_rows, train_job

    panel, params = _panel(), _params()
    trained = train_job(TrainJob(panel, FOLD, params, "data", "cpu", RunCache(None), "[1/1]"))
    path = Path(folder) / f"{os.getpid()}_{next(_FILES)}.pt"
    path.write_bytes(trained.checkpoint)
    deterministic_runtime(params["train"]["threads"])
    model, ckpt = load_checkpoint(path)
    pred, _ = predict_rows(model, ckpt, panel, panel.rows(FOLD.test_start, FOLD.test_end, labelled=False))
    return (
        hashlib.sha256(trained.checkpoint).hexdigest(),
        hashlib.sha256(pred.tobytes()).hexdigest(),
        _reduction(THREADS),
    )


def _twice(folder: str) -> list[tuple[str, str, bytes]]:
    return [_train_and_predict(folder) for _ in range(2)]


@pytest.mark.slow
def test_training_is_bit_identical_across_runs_processes_and_a_busy_cpu(tmp_path, monkeypatch, keep_threads):
    """An LSTM with dropout on two threads, three times in this process (the heap different each
    time) and twice in a spawned process that starts with OMP_DYNAMIC and MKL_DYNAMIC on, all while
    another process keeps both cores busy: one model file, one set of predictions, one sum."""
    assert _reduction(1) != _reduction(THREADS), "the sum must be able to tell a team of 1 from one of 2"
    burner = subprocess.Popen([sys.executable, "-c", BURN], env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    try:
        runs, ballast = [], []
        for i in range(3):
            ballast.append(torch.empty(1 + 4099 * i, dtype=torch.uint8))  # other addresses for the tensors
            runs.append(_train_and_predict(str(tmp_path)))
        monkeypatch.setenv("OMP_DYNAMIC", "true")  # read by the child's OpenMP at start-up
        monkeypatch.setenv("MKL_DYNAMIC", "true")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs += pool.submit(_twice, str(tmp_path)).result(timeout=300)
        assert burner.poll() is None, "the CPU was not kept busy throughout"
    finally:
        burner.kill()
        burner.wait()
    assert len(runs) == 5
    for name, k in (("model file", 0), ("predictions", 1), ("sum", 2)):
        assert len({r[k] for r in runs}) == 1, f"{name} differs between runs: {[r[k] for r in runs]}"

"""Data-parallel training under torchrun (gloo, two CPU ranks): it runs, rank 0 alone writes, and
without dropout it follows the single process to floating-point rounding (batch_size is global)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lib.errors import PipelineError
from lib.ml import distributed
from lib.ml.fit import fit_torch
from lib.ml.models import build_net
from lib.ml.runtime import resolve_amp
from lib.ml.trainer import check_processes, load_checkpoint
from tests.helpers import run_stages, small_params, stage_commands, tool_env, write_params

CPU = torch.device("cpu")
MODELS = ["final.pt", "fold_00.pt", "fold_01.pt"]


def _params(**train):
    p = small_params()
    p["model"].update(hidden=4, dropout=0.0)  # no dropout: the ranks draw other masks than one process would
    p["train"].update(epochs=2, threads=1, batch_size=64, accumulate=2, **train)  # accumulate: no_sync runs
    return p


def _outputs() -> dict:
    names = sorted(p.name for p in Path("models").glob("*.pt"))  # models/baselines/ holds the baseline families
    ckpts = {name: load_checkpoint(Path("models") / name)[1] for name in names}
    return {
        "ckpts": ckpts,
        "metrics": json.loads(Path("reports/train/metrics.json").read_text()),
        "curves": pd.read_csv("reports/train/curves.csv"),
    }


@pytest.mark.slow
def test_torchrun_trains_every_model_writes_once_and_follows_one_process(workdir):
    write_params(workdir, _params())
    run_stages("download", "validate", "featurize", "train")
    one = _outputs()

    module, argv = stage_commands()["train"]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", module, *argv],
        check=False,
        cwd=workdir,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    ddp = _outputs()
    assert list(ddp["ckpts"]) == MODELS and not list(Path(".").rglob("*.tmp"))
    assert not any(Path(".cache/train").rglob("*.pt")), "rank 0 removes the resume state once every model is written"
    assert ddp["metrics"].keys() == one["metrics"].keys()  # once per model, no rank's duplicate
    assert ddp["curves"][["model", "epoch"]].equals(one["curves"][["model", "epoch"]])
    for name, ckpt in ddp["ckpts"].items():
        assert ckpt["world_size"] == 2 and one["ckpts"][name]["world_size"] == 1
        assert ckpt["best_epoch"] == one["ckpts"][name]["best_epoch"], name
        for key, weights in ckpt["members"][0]["state_dict"].items():
            torch.testing.assert_close(weights, one["ckpts"][name]["members"][0]["state_dict"][key], rtol=0, atol=1e-5)
    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose(ddp["curves"][column], one["curves"][column], rtol=1e-5)


def _fit_on_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    """fit_torch on 2 x 8 + 1 rows with batch 8: the last step's single row leaves rank 1 without one."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        torch.save(_fit(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _fit() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=gen), torch.randn(30, generator=gen)
    cfg = {**small_params()["train"], "batch_size": 8, "accumulate": 1, "epochs": 3, "patience": 3}
    torch.manual_seed(0)
    net = build_net({**small_params()["model"], "hidden": 4}, 3, 3)
    fit_torch(
        net,
        x,
        y,
        torch.arange(2, 19),
        torch.arange(19, 30),
        3,
        cfg,
        resolve_amp("off", CPU),
        "t",
        lambda e: None,
        seed=0,
    )
    return net.state_dict()


@pytest.mark.slow
def test_a_rank_without_rows_in_a_step_joins_it_at_weight_zero(tmp_path):
    mp.spawn(_fit_on_rank, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2)
    one = _fit()
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key, weights in one.items():
            torch.testing.assert_close(state[key], weights, rtol=0, atol=1e-5)


def test_micro_batches_split_a_step_among_the_ranks(monkeypatch):
    rows = torch.arange(10, 17)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        shares.append(distributed.micro_batches(rows, 2))
    assert [[(r.tolist(), n) for r, n in share] for share in shares] == [
        [([10, 12], 2), ([14, 16], 2)],
        [([11, 13], 2), ([15], 1)],
    ]
    assert [(r.tolist(), n) for r, n in distributed.micro_batches(rows[:1], 2)] == [([10], 0)]  # rank 1: counts 0


@pytest.mark.slow
def test_other_ranks_write_nothing(workdir, monkeypatch):
    write_params(workdir, _params())
    run_stages("download", "validate", "featurize")
    before = sorted(Path(".").rglob("*"))
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    run_stages("train")
    assert sorted(Path(".").rglob("*")) == before


@pytest.mark.parametrize(
    ("arch", "workers", "message"),
    [
        ("lstm", 2, "train.workers=2 under torchrun (WORLD_SIZE=2): the two do not combine"),
        ("ridge", 1, "model.arch=ridge is not a torch network and cannot train data-parallel under torchrun"),
    ],
)
def test_what_cannot_run_under_torchrun_is_a_clear_error(monkeypatch, arch, workers, message):
    monkeypatch.setenv("WORLD_SIZE", "2")
    p = _params(workers=workers)
    p["model"]["arch"] = arch
    with pytest.raises(PipelineError, match=re.escape(message)):
        check_processes(p, CPU)

"""Training throughput: the project's trainer (lib.ml.models.TorchModel.fit, the loop of lib/ml/fit.py,
with its validation pass and per-epoch resume state) against a bare PyTorch loop on the same
model, data, batch size and threads, in one process, alternating, median of several runs.

    python bench/train_throughput.py [--repeats 5] [--rows 6000] [--threads 2]

Prints samples/s of both and their ratio for lstm, gru, alstm and transformer at the default
size (params.yaml). Target: ratio >= 0.90."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.ml.fit import RunCache
from lib.ml.models import FoldData, build, build_net
from lib.ml.panel import windows
from lib.ml.runtime import resolve_amp, seed_everything
from lib.params import load_params

ARCHS = ("lstm", "gru", "alstm", "transformer")


def bare_epoch(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    seq_len: int,
    bs: int,
    lr: float,
    clip: float,
    delta: float,
    gen: torch.Generator,
) -> None:
    """The loop anyone would write: shuffle, gather windows, forward, Huber, backward, clip, Adam."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    lossf = nn.HuberLoss(delta=delta)
    net.train()
    order = rows[torch.randperm(len(rows), generator=gen)]
    for b in range(0, len(order), bs):
        r = order[b : b + bs]
        loss = lossf(net(windows(x, r, seq_len)), y[r])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, default=6000, help="training samples per epoch")
    ap.add_argument("--threads", type=int, default=None, help="default: train.threads")
    ap.add_argument("--archs", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    mcfg, tcfg = params["model"], {**params["train"], "epochs": 1, "lr_schedule": "constant", "warmup_epochs": 0}
    threads = args.threads if args.threads is not None else tcfg["threads"]
    seed_everything(0, threads)
    seq_len, n_features = mcfg["seq_len"], 40
    x = torch.randn(args.rows + 64 + seq_len, n_features)
    y = torch.randn(len(x))
    fit_rows = torch.arange(seq_len, seq_len + args.rows)
    val_rows = torch.arange(seq_len + args.rows, len(x))  # a 64-row validation tail: the trainer validates every epoch
    amp = resolve_amp("off", torch.device("cpu"))
    print(
        f"threads {torch.get_num_threads()}, {args.rows} samples/epoch, batch {tcfg['batch_size']}, "
        f"hidden {mcfg['hidden']} x {mcfg['layers']}, seq_len {seq_len}, {args.repeats} repeats (median)"
    )
    print(f"{'arch':12s} {'trainer/s':>10s} {'bare/s':>10s} {'ratio':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            cfg = {**mcfg, "arch": arch}
            ours, bare = [], []
            for rep in range(args.repeats + 1):  # the first round warms up and is dropped
                model = build(cfg, tcfg, n_features=n_features, seq_len=seq_len, seed=rep, amp=amp)
                data = FoldData(x, y, fit_rows, val_rows, seq_len)
                t0 = time.perf_counter()
                model.fit(data, tag=f"{arch}_{rep}", on_epoch=lambda e: None, cache=RunCache(Path(tmp)))
                t_ours = time.perf_counter() - t0
                torch.manual_seed(rep)
                net = build_net(cfg, n_features, seq_len)
                t0 = time.perf_counter()
                bare_epoch(
                    net,
                    x,
                    y,
                    fit_rows,
                    seq_len,
                    tcfg["batch_size"],
                    tcfg["lr"],
                    tcfg["grad_clip"],
                    tcfg["huber_delta"],
                    torch.Generator().manual_seed(rep),
                )
                t_bare = time.perf_counter() - t0
                if rep:
                    ours.append(args.rows / t_ours)
                    bare.append(args.rows / t_bare)
            a, b = statistics.median(ours), statistics.median(bare)
            print(f"{arch:12s} {a:10.0f} {b:10.0f} {a / b:7.3f}", flush=True)


if __name__ == "__main__":
    main()

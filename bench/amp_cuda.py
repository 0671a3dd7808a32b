"""Mixed precision on CUDA: each neural architecture at hidden 256, trained with the project's
trainer in float32 and in float16 autocast with a GradScaler (train.amp off vs auto), printing
samples/s and peak GPU memory of both.

    python bench/amp_cuda.py [--hidden 256] [--rows 50000] [--epochs 2]

Without a CUDA device it prints one line saying so and exits 0 (CI has no GPU)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.ml.models import FoldData, build
from lib.ml.runtime import resolve_amp, seed_everything
from lib.params import load_params

ARCHS = ("lstm", "gru", "alstm", "transformer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (one more warms up)")
    ap.add_argument("--archs", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("amp_cuda: skipped, no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine")
        return 0
    device = torch.device("cuda")
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    mcfg = {**params["model"], "hidden": args.hidden, "heads": 8, "ff_size": 4 * args.hidden}
    tcfg = {**params["train"], "epochs": args.epochs + 1, "patience": 10**6, "lr_schedule": "constant"}
    seed_everything(0, params["train"]["threads"])
    torch.use_deterministic_algorithms(False)  # speed, not bits, is measured here
    seq_len, n_features = mcfg["seq_len"], 40
    x = torch.randn(args.rows + 2000 + seq_len, n_features, device=device)
    y = torch.randn(len(x), device=device)
    data = FoldData(
        x,
        y,
        torch.arange(seq_len, seq_len + args.rows, device=device),
        torch.arange(seq_len + args.rows, len(x), device=device),
        seq_len,
    )
    print(
        f"{torch.cuda.get_device_name()}: hidden {args.hidden} x {mcfg['layers']}, seq_len {seq_len}, "
        f"batch {tcfg['batch_size']}, {args.rows} samples/epoch"
    )
    print(f"{'arch':12s} {'precision':9s} {'samples/s':>10s} {'peak MiB':>9s}")
    for arch in args.archs:
        for mode in ("off", "auto"):
            amp = resolve_amp(mode, device)
            torch.cuda.reset_peak_memory_stats()
            model = build({**mcfg, "arch": arch}, tcfg, n_features=n_features, seq_len=seq_len, seed=0, amp=amp)
            seconds: list[float] = []

            def on_epoch(e, seconds=seconds):
                seconds.append(e.seconds)

            torch.cuda.synchronize()
            model.fit(data, tag=arch, on_epoch=on_epoch)
            torch.cuda.synchronize()
            rate = args.rows * (len(seconds) - 1) / sum(seconds[1:])
            peak = torch.cuda.max_memory_allocated() / 2**20
            print(f"{arch:12s} {amp.name:9s} {rate:10.0f} {peak:9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A short model card (markdown) for the final model: what it is, what it was trained on, how
each walk-forward fold did on its early-stopping (val) rows and out of sample."""

from __future__ import annotations

from typing import Any

SHARED = ("hidden", "layers", "dropout", "seq_len", "ensemble")
BY_ARCH = {
    "transformer": ("heads", "ff_size"),
    "ridge": ("ridge_alpha",),
    "gbm": ("gbm_max_iter", "gbm_learning_rate", "gbm_max_leaf_nodes", "gbm_min_samples_leaf", "gbm_l2"),
}


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _label_space(final: dict[str, Any]) -> str:
    """Nothing for raw labels; else which per-date score the predictions are (train.label_norm)."""
    norm = final.get("label_norm", "none")
    return "" if norm == "none" else f" as a per-date {norm} score (train.label_norm: not a log return)"


def model_card(final: dict[str, Any], folds: list[dict[str, Any]], fold_ics: list[float | None]) -> str:
    """The card of `final` (its checkpoint dict), with each fold's checkpoint and out-of-sample rank IC."""
    m, t = final["model"], final["params"]["train"]
    keys = [k for k in SHARED if not (m["arch"] in ("ridge", "gbm") and k != "seq_len" and k != "ensemble")]
    keys += list(BY_ARCH.get(m["arch"], ()))
    rows = []
    for ck, ic in zip(folds, fold_ics, strict=True):
        f = ck["fold"]
        rows.append(
            f"| {f['name']} | {f['fit_start']}..{f['fit_end']} | {f['test_start']}..{f['test_end']} | "
            f"{_fmt(ck['best_val_loss'])} | {_fmt(ck['best_epoch'])} | "
            f"{_fmt(ic)} |"
        )
    on = final["trained_on"]
    lines = [
        f"# Model card: {m['arch']}" + (f" ensemble of {m['ensemble']}" if m["ensemble"] > 1 else ""),
        "",
        "`models/final.pt` (DVC artifact `trading-model`): predicts each ticker's forward log return over "
        f"{final['params']['features']['horizon']} sessions{_label_space(final)} from {len(final['features'])} features"
        + (f" over a {final['seq_len']}-session window." if final["family"] == "torch" else " of the anchor date."),
        "Load it with `lib.ml.trainer.load_checkpoint` (or `torch.load(path, weights_only=True)`).",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {m['arch']} ({final['family']}) |",
        *(f"| model.{k} | {m[k]} |" for k in keys),
        (
            f"| training | loss {t['loss']}, lr {t['lr']} {t['lr_schedule']}, batch {t['batch_size']}"
            f" x {t['accumulate']}{' (whole dates)' if t.get('batching') == 'by_date' else ''}, seed {t['seed']} |"
        ),
        f"| final model fit on | {on['start']}..{on['end']} ({on['rows']} rows; "
        + (
            "refit on all labelled rows for the epochs validation chose"
            if final["final_refit"]
            else "fit rows only, before its validation tail"
        )
        + ") |",
        f"| epochs | {final['member_best_epoch']} best of at most {t['epochs']} |",
        f"| features sha256 | `{final['data_hash']}` |",
        f"| device, precision | {final['device']}, {final['amp_dtype']}, torch {final['torch']} |",
        "",
        (
            "Walk-forward folds (out-of-sample rank IC: pooled Spearman of prediction and label on the test window;"
            " its significance is in `reports/metrics.json`):"
        ),
        "",
        "| fold | fit | test | validation loss | best epoch | test rank IC |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)

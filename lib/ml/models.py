"""The model zoo behind one contract (as Qlib's model classes): `model.arch` picks a class.

Every model, torch network or scikit-learn baseline, is a `Model`:

    m = build(model_cfg, train_cfg, n_features=..., seq_len=..., seed=..., amp=...)
    result = m.fit(data, tag="fold_00", on_epoch=..., cache=..., epochs=None)  # FitResult
    pred = m.predict(x, rows)      # standardised predictions at anchor rows (float64 numpy)
    state = m.state()              # tensors and plain values only (torch.load(weights_only=True))
    m = restore(model_cfg, state, n_features=..., seq_len=...)

`data` is a `FoldData`: the scaled feature table, standardised (or per-date normalised, train.label_norm)
labels, the fit and early-stopping (val) anchor rows (none: a refit for a fixed number of epochs), and
each row's anchor date (for by-date batches and the ic loss of the neural models). The neural
models see a window of `seq_len` rows ending at the anchor; ridge and gbm see the anchor
row's standardised features only. Params reach a class as keyword arguments, picked by name
from its signature. `Ensemble` averages members trained with seeds seed, seed+1, ...
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from lib.ml.fit import EpochLog, RunCache, fit_torch, loss_fn, predict_scaled
from lib.ml.runtime import Amp, native_threads


# ------------------------------------------------------------------------------------------- networks
class RecurrentRegressor(nn.Module):
    """Stacked recurrent network (`RNN`: LSTM or GRU) over a window of feature rows; a linear
    head on the last step's state."""

    RNN: ClassVar[type[nn.RNNBase]] = nn.LSTM

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.rnn = self.RNN(n_features, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(self.drop(out[:, -1])).squeeze(-1)


class LSTMRegressor(RecurrentRegressor):
    RNN = nn.LSTM


class GRURegressor(RecurrentRegressor):
    RNN = nn.GRU


class ALSTMRegressor(nn.Module):
    """Attention LSTM (Qlib's ALSTM): the LSTM's outputs pooled by a learned attention over the
    window, concatenated with the last step's state, into a linear head."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh())
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.att = nn.Sequential(
            nn.Linear(hidden, max(1, hidden // 2)),
            nn.Dropout(dropout),
            nn.Tanh(),
            nn.Linear(max(1, hidden // 2), 1, bias=False),
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.inp(x))
        weights = torch.softmax(self.att(out), dim=1)  # (batch, seq, 1)
        pooled = (weights * out).sum(dim=1)
        return self.head(self.drop(torch.cat([out[:, -1], pooled], dim=-1))).squeeze(-1)


class TransformerRegressor(nn.Module):
    """A small pre-norm transformer encoder over the window, with sinusoidal positions; the last
    position's output feeds a linear head."""

    def __init__(
        self, n_features: int, hidden: int, layers: int, dropout: float, heads: int, ff_size: int, seq_len: int
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, hidden)
        pos = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)
        freq = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden))
        pe = torch.zeros(seq_len, hidden)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : hidden // 2]
        self.register_buffer("pe", pe, persistent=False)
        layer = nn.TransformerEncoderLayer(hidden, heads, ff_size, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.inp(x) + self.pe[-x.shape[1] :])
        return self.head(self.norm(h[:, -1])).squeeze(-1)


NETS: dict[str, type[nn.Module]] = {
    "lstm": LSTMRegressor,
    "gru": GRURegressor,
    "alstm": ALSTMRegressor,
    "transformer": TransformerRegressor,
}


def _kwargs(fn: Callable[..., Any], available: dict[str, Any]) -> dict[str, Any]:
    """The params that `fn` names in its signature, as keyword arguments."""
    return {k: available[k] for k in inspect.signature(fn).parameters if k in available}


def build_net(cfg: dict[str, Any], n_features: int, seq_len: int) -> nn.Module:
    cls = NETS[cfg["arch"]]
    return cls(**_kwargs(cls.__init__, {**cfg, "n_features": n_features, "seq_len": seq_len}))


# ------------------------------------------------------------------------------------------- contract
@dataclass(frozen=True)
class FoldData:
    x: torch.Tensor  # (rows, features) scaled float32, on the training device
    y: torch.Tensor  # (rows,) standardised labels (0 where unknown)
    fit_rows: torch.Tensor  # int64 anchor rows to fit on
    val_rows: torch.Tensor  # int64 anchor rows for early stopping (empty: fixed epochs, no selection)
    seq_len: int
    dates: torch.Tensor | None = None  # (rows,) int64 anchor date of every row (train.batching by_date, loss ic)


@dataclass(frozen=True)
class FitResult:
    best_epoch: int  # epoch (or boosting iteration - 1) kept; refits: the last one
    best_val_loss: float  # NaN for a refit
    epochs_run: int


class Model:
    """The contract. Subclasses set `family` and implement fit, predict, state and from_state."""

    family: ClassVar[str]

    def fit(
        self,
        data: FoldData,
        *,
        tag: str,
        on_epoch: Callable[[EpochLog], None],
        cache: RunCache | None = None,
        epochs: int | None = None,
    ) -> FitResult:
        raise NotImplementedError

    def predict(self, x: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError


class TorchModel(Model):
    """lstm, gru, alstm, transformer: the torch loop of lib/ml/fit.py."""

    family = "torch"

    def __init__(
        self,
        model_cfg: dict[str, Any],
        train_cfg: dict[str, Any],
        *,
        n_features: int,
        seq_len: int,
        seed: int,
        amp: Amp,
    ) -> None:
        self.train_cfg, self.seq_len, self.seed, self.amp = train_cfg, seq_len, seed, amp
        torch.manual_seed(seed)
        self.net = build_net(model_cfg, n_features, seq_len).to(amp.device)

    def fit(
        self,
        data: FoldData,
        *,
        tag: str,
        on_epoch: Callable[[EpochLog], None],
        cache: RunCache | None = None,
        epochs: int | None = None,
    ) -> FitResult:
        best_epoch, best_val, run = fit_torch(
            self.net,
            data.x,
            data.y,
            data.fit_rows,
            data.val_rows,
            data.seq_len,
            self.train_cfg,
            self.amp,
            tag,
            on_epoch,
            seed=self.seed,
            epochs=epochs,
            cache=cache,
            dates=data.dates,
        )
        return FitResult(best_epoch, best_val, run)

    def predict(self, x: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        return predict_scaled(self.net, x, rows, self.seq_len, self.amp).double().cpu().numpy()

    def state(self) -> dict[str, Any]:
        return {"state_dict": {k: v.cpu() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(
        cls, model_cfg: dict[str, Any], state: dict[str, Any], *, n_features: int, seq_len: int, amp: Amp
    ) -> TorchModel:
        self = cls.__new__(cls)
        self.train_cfg, self.seq_len, self.seed, self.amp = {}, seq_len, -1, amp
        self.net = build_net(model_cfg, n_features, seq_len)
        self.net.load_state_dict(state["state_dict"])
        return self


def _anchor(x: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    return x[rows].double().cpu().numpy()


class RidgeModel(Model):
    """scikit-learn Ridge on the anchor row's standardised features (no window)."""

    family = "sklearn"

    def __init__(self, model_cfg: dict[str, Any], train_cfg: dict[str, Any], **_: Any) -> None:
        self.alpha, self.threads, self.lossf = model_cfg["ridge_alpha"], train_cfg["threads"], loss_fn(train_cfg)
        self.coef, self.intercept = np.zeros(0), 0.0

    def fit(
        self,
        data: FoldData,
        *,
        tag: str,
        on_epoch: Callable[[EpochLog], None],
        cache: RunCache | None = None,
        epochs: int | None = None,
    ) -> FitResult:
        from sklearn.linear_model import Ridge

        with native_threads(self.threads):  # its BLAS solve rounds by the thread count
            est = Ridge(alpha=self.alpha).fit(
                _anchor(data.x, data.fit_rows), data.y[data.fit_rows].double().cpu().numpy()
            )
        self.coef, self.intercept = est.coef_.astype(np.float64), float(est.intercept_)
        train = _loss(self.lossf, self.predict(data.x, data.fit_rows), data.y[data.fit_rows])
        val = (
            _loss(self.lossf, self.predict(data.x, data.val_rows), data.y[data.val_rows])
            if len(data.val_rows)
            else math.nan
        )
        on_epoch(EpochLog(tag, 0, train, val, 0.0, math.nan, math.nan, "float64", 1.0))
        return FitResult(0, val, 1)

    def predict(self, x: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        return _anchor(x, rows) @ self.coef + self.intercept

    def state(self) -> dict[str, Any]:
        return {"coef": torch.from_numpy(self.coef), "intercept": self.intercept, "alpha": self.alpha}

    @classmethod
    def from_state(cls, model_cfg: dict[str, Any], state: dict[str, Any], **_: Any) -> RidgeModel:
        self = cls.__new__(cls)
        self.alpha, self.coef, self.intercept = state["alpha"], state["coef"].numpy(), float(state["intercept"])
        return self


def _loss(lossf: nn.Module, pred: np.ndarray, y: torch.Tensor) -> float:
    return float(lossf(torch.from_numpy(pred).float(), y.float().cpu()))


TREE_FIELDS = ("feature_idx", "num_threshold", "left", "right", "is_leaf", "value", "missing_go_to_left")


class GBMModel(Model):
    """scikit-learn HistGradientBoostingRegressor on the anchor row's standardised features.

    Early stopping on the fold's own val rows: boost `gbm_max_iter` rounds, keep the
    prefix of trees with the lowest val loss. The trees are saved as plain tensors
    (node arrays) and evaluated here, so the file loads with weights_only=True."""

    family = "sklearn"

    def __init__(self, model_cfg: dict[str, Any], train_cfg: dict[str, Any], *, seed: int, **_: Any) -> None:
        self.cfg, self.seed, self.threads, self.lossf = model_cfg, seed, train_cfg["threads"], loss_fn(train_cfg)
        self.trees: dict[str, torch.Tensor] = {}
        self.baseline = 0.0

    def fit(
        self,
        data: FoldData,
        *,
        tag: str,
        on_epoch: Callable[[EpochLog], None],
        cache: RunCache | None = None,
        epochs: int | None = None,
    ) -> FitResult:
        from sklearn.ensemble import HistGradientBoostingRegressor

        c = self.cfg
        est = HistGradientBoostingRegressor(
            learning_rate=c["gbm_learning_rate"],
            max_iter=epochs or c["gbm_max_iter"],
            max_leaf_nodes=c["gbm_max_leaf_nodes"],
            min_samples_leaf=c["gbm_min_samples_leaf"],
            l2_regularization=c["gbm_l2"],
            early_stopping=False,
            random_state=self.seed,
        )
        xf, yf = _anchor(data.x, data.fit_rows), data.y[data.fit_rows].double().cpu().numpy()
        with native_threads(self.threads):
            est.fit(xf, yf)
            if len(data.val_rows):
                xv, yv = _anchor(data.x, data.val_rows), data.y[data.val_rows]
                losses = [_loss(self.lossf, p, yv) for p in est.staged_predict(xv)]
                keep = int(np.argmin(losses)) + 1
            else:
                losses, keep = [math.nan] * est.n_iter_, est.n_iter_
        self.baseline = float(np.ravel(est._baseline_prediction)[0])
        self._set_trees([it[0].nodes for it in est._predictors[:keep]])
        train = _loss(self.lossf, self.predict(data.x, data.fit_rows), data.y[data.fit_rows])
        on_epoch(
            EpochLog(tag, keep - 1, train, losses[keep - 1], c["gbm_learning_rate"], math.nan, math.nan, "float64", 1.0)
        )
        return FitResult(keep - 1, losses[keep - 1], keep)

    def _set_trees(self, nodes: list[np.ndarray]) -> None:
        sizes = np.array([len(n) for n in nodes], dtype=np.int64)
        flat = np.concatenate(nodes) if nodes else np.zeros(0, dtype=[(f, "f8") for f in TREE_FIELDS])
        self.trees = {
            f: torch.from_numpy(
                np.ascontiguousarray(flat[f]).astype(np.float64 if f in ("num_threshold", "value") else np.int64)
            )
            for f in TREE_FIELDS
        }
        self.trees["sizes"] = torch.from_numpy(sizes)

    def predict(self, x: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        X = _anchor(x, rows)
        t = {k: v.numpy() for k, v in self.trees.items()}
        out = np.full(len(X), self.baseline)
        index = np.arange(len(X))
        start = 0
        for size in t["sizes"]:
            node = np.full(len(X), start)
            while True:
                inner = t["is_leaf"][node] == 0
                if not inner.any():
                    break
                r, nd = index[inner], node[inner]
                v = X[r, t["feature_idx"][nd]]
                left = np.where(np.isnan(v), t["missing_go_to_left"][nd] == 1, v <= t["num_threshold"][nd])
                node[inner] = start + np.where(left, t["left"][nd], t["right"][nd])
            out += t["value"][node]
            start += int(size)
        return out

    def state(self) -> dict[str, Any]:
        return {"trees": self.trees, "baseline": self.baseline, "n_trees": len(self.trees["sizes"])}

    @classmethod
    def from_state(cls, model_cfg: dict[str, Any], state: dict[str, Any], **_: Any) -> GBMModel:
        self = cls.__new__(cls)
        self.trees, self.baseline = state["trees"], float(state["baseline"])
        return self


REGISTRY: dict[str, type[Model]] = {
    "lstm": TorchModel,
    "gru": TorchModel,
    "alstm": TorchModel,
    "transformer": TorchModel,
    "ridge": RidgeModel,
    "gbm": GBMModel,
}


def build(
    model_cfg: dict[str, Any], train_cfg: dict[str, Any], *, n_features: int, seq_len: int, seed: int, amp: Amp
) -> Model:
    return REGISTRY[model_cfg["arch"]](model_cfg, train_cfg, n_features=n_features, seq_len=seq_len, seed=seed, amp=amp)


def restore(model_cfg: dict[str, Any], state: dict[str, Any], *, n_features: int, seq_len: int) -> Model:
    cpu = Amp(torch.device("cpu"), None, torch.amp.GradScaler("cpu", enabled=False))
    return REGISTRY[model_cfg["arch"]].from_state(model_cfg, state, n_features=n_features, seq_len=seq_len, amp=cpu)


class Ensemble:
    """Members of one fold; the prediction is their mean."""

    def __init__(self, members: list[Model]) -> None:
        self.members = members

    def predict(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(mean, members) standardised predictions; members is (n_members, rows)."""
        each = np.stack([m.predict(x, rows) for m in self.members]) if len(rows) else np.zeros((len(self.members), 0))
        return each.mean(axis=0), each

import json
import math

import numpy as np
import pandas as pd
import pytest

from lib.metrics import active, performance, prediction_quality

NO_TRADES = pd.DataFrame({"notional": [], "cost": []})


def test_known_values():
    e = np.array([100.0, 110.0, 99.0, 108.9])
    m = performance(e, np.ones(4), pd.DataFrame({"notional": [100.0], "cost": [0.1]}), 252, 0.0).values
    r = np.array([0.1, -0.1, 0.1])
    assert m["total_return"] == pytest.approx(0.089)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(-0.1)
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt((0.01) / 3) * math.sqrt(252))
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["n_trades"] == 1 and isinstance(m["n_trades"], int)


def test_flat_equity_gives_null_with_reasons_not_nan():
    s = performance(np.full(50, 100.0), np.zeros(50), NO_TRADES, 252, 0.0)
    for key in ("sharpe", "sharpe_pvalue", "sortino", "calmar", "hit_rate"):
        assert s.values[key] is None and s.reasons[key]
    assert s.values["total_return"] == 0.0 and s.values["n_trades"] == 0
    json.dumps(s.values, allow_nan=False)


def test_active_significance_and_identical_curves():
    rng = np.random.default_rng(0)
    base = 100 * np.cumprod(1 + rng.normal(0, 0.01, 500))
    better = base * np.cumprod(np.full(500, 1.001))
    a = active(better, base, 252)
    assert a.values["pvalue"] < 0.01 and a.values["information_ratio"] > 0
    same = active(base, base, 252)
    assert same.values["pvalue"] is None and same.reasons["pvalue"] == "identical returns"


def test_prediction_quality_uses_non_overlapping_dates():
    dates = pd.bdate_range("2020-01-01", periods=100)
    y = np.sin(np.arange(100))
    df = pd.DataFrame({"date": dates, "ticker": "A", "prediction": y, "label": y})
    q = prediction_quality(df, 5)
    assert q.values["n"] == 20
    assert q.values["ic"] == pytest.approx(1.0) and q.values["directional_accuracy"] == 1.0
    assert q.values["directional_pvalue"] < 1e-3
    const = prediction_quality(df.assign(prediction=0.0), 5)
    assert const.values["ic"] is None

"""Golden feature tables: the values `build_features` gave on the bundled sample before
vectorisation and before Parquet, stored under `tests/data/golden/`, compared with a tolerance.

Bits are not portable: numpy picks SIMD kernels for `log`, `exp` and friends by CPU, and its
AVX-512 kernels differ from the baseline (X86_V2) and AVX2 ones in the last bits (measured:
up to 6e-12 relative on returns, 5e-11 on `volume_z`). So a golden comparison is of values, to
`RTOL`/`SCALE_TOL`; bit-exact assertions belong to two runs on one machine
(`tests/test_pipeline.py::test_two_runs_are_bit_identical`).

Regenerate (only when a feature's definition changes on purpose) with the portable kernels:
`NPY_DISABLE_CPU_FEATURES="AVX512_SPR AVX512_ICL X86_V4" python -m tests.golden`.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lib.data.features import build_features, feature_columns
from lib.data.providers import download
from lib.io import read_table
from lib.tables import LABEL
from tests.helpers import ROOT, frame_sha

# A value matches when |ours - golden| <= RTOL * |golden| + SCALE_TOL * (its column's standard deviation).
# Different SIMD kernels move features by up to ~5e-11 relative; inputs moved by a few ulps move an
# ill-conditioned one (Bollinger %B inside a band of near-zero width) by up to 5e-10 of its column's
# spread (tests/test_features.py); a real change of a feature's definition moves it by far more.
RTOL = 1e-9
SCALE_TOL = 1e-8
FOLDER = ROOT / "tests" / "data" / "golden"
SAMPLE = ROOT / "data" / "sample"

DEFAULT_FEATURES = {  # params.yaml's features section when the goldens were captured (pinned here)
    "horizon": 5, "return_windows": [1, 5, 10, 21, 63], "sma_windows": [10, 50, 200], "ema_windows": [12, 26],
    "rsi_window": 14, "macd_fast": 12, "macd_slow": 26, "macd_signal": 9, "bollinger_window": 20,
    "bollinger_k": 2.0, "atr_window": 14, "vol_windows": [5, 21, 63], "volume_window": 21, "calendar": True}  # fmt: skip
# features keys added after the capture: their defaults are the basic set, not normalised (the goldens' case).
OPT_IN_FEATURES = {"set": "basic", "alpha158_windows": [5, 10, 20, 30, 60], "cross_section": "none",
                   "cross_section_keep_raw": True}  # fmt: skip
OTHER_FEATURES = {
    "horizon": 3, "return_windows": [2, 7], "sma_windows": [5, 30], "ema_windows": [3, 40], "rsi_window": 9,
    "macd_fast": 5, "macd_slow": 15, "macd_signal": 4, "bollinger_window": 10, "bollinger_k": 1.5,
    "atr_window": 7, "vol_windows": [10], "volume_window": 10, "calendar": False}  # fmt: skip

# input_sha: the parsed sample (parsing is exact on every CPU). sha: the features' sha256 (label end
# excluded) as first captured, with numpy's baseline kernels: the stored tables hold exactly these bits.
GOLDEN = {
    "default": {
        "tickers": ["SPY", "QQQ", "TLT", "GLD"], "start": "2005-01-01", "shuffle": False, "cfg": DEFAULT_FEATURES,
        "input_sha": "9d5ee5a0a92f151ee302449c4aae310ca9b9119d35e7a05acf07daf2b1fb0b51",
        "shape": (19032, 28), "sha": "159d65d098db945ff0195404fd2d0b97757f94d43a5f82b2b3e6314cd6112a4b"},
    "other": {
        "tickers": ["TLT", "AAPL", "GLD", "IWM", "QQQ", "SPY"], "start": None, "shuffle": True, "cfg": OTHER_FEATURES,
        "input_sha": "2b1a090ace2ce367fe1335552107a8d5511418f9baa5338c19a4cc339f394248",
        "shape": (35073, 18), "sha": "76273f9e4642871134e1eb23201e17170f3a30232639d707f64519d22bf9ded2"},
}  # fmt: skip


def sample_prices(name: str) -> pd.DataFrame:
    """The golden case's input: bundled sample bars (rows of all tickers shuffled for `other`)."""
    g = GOLDEN[name]
    df = download({"source": "sample", "tickers": g["tickers"], "start": g["start"], "end": None}, SAMPLE)
    if g["shuffle"]:
        df = df.sample(frac=1.0, random_state=7).reset_index(drop=True)
    return df


def features_of(name: str, prices: pd.DataFrame | None = None) -> pd.DataFrame:
    prices = sample_prices(name) if prices is None else prices
    return build_features(prices, copy.deepcopy(GOLDEN[name]["cfg"]))


def stored(name: str) -> pd.DataFrame:
    return read_table(FOLDER / f"features_{name}.parquet", [])


def assert_matches_golden(out: pd.DataFrame, name: str) -> None:
    """Same shape, columns, order, dates, tickers and label ends exactly; floats to RTOL/SCALE_TOL."""
    golden = stored(name)
    assert out.shape == golden.shape == GOLDEN[name]["shape"]
    assert list(out.columns) == list(golden.columns)
    exact = ["date", "ticker", "label_end"]
    pd.testing.assert_frame_equal(out[exact], golden[exact], check_exact=True)
    floats = [*feature_columns(golden), LABEL]
    assert (out[floats].dtypes == np.float64).all()
    for col in floats:
        atol = SCALE_TOL * np.nanstd(golden[col].to_numpy())
        np.testing.assert_allclose(out[col].to_numpy(), golden[col].to_numpy(), rtol=RTOL, atol=atol, err_msg=col)


def capture() -> None:
    """Write the golden tables; refuses unless this machine reproduces the first-captured bits."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, g in GOLDEN.items():
        prices = sample_prices(name)
        assert frame_sha(prices) == g["input_sha"], f"{name}: the sample input changed"
        out = features_of(name, prices)
        if frame_sha(out.drop(columns="label_end")) != g["sha"]:
            raise SystemExit(f"{name}: not the first-captured bits: run with numpy's portable kernels (see docstring)")
        table = pa.Table.from_pandas(out, preserve_index=False).replace_schema_metadata(None)
        floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
        pq.write_table(table, FOLDER / f"features_{name}.parquet", compression="zstd", compression_level=19,
                       use_byte_stream_split=floats, use_dictionary=False)  # fmt: skip
        print(f"wrote features_{name}.parquet {out.shape}")


if __name__ == "__main__":
    capture()

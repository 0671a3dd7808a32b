"""Providers against hand-built files and responses (shapes from yfinance 1.7 and FMP docs); no network."""

import logging

import pandas as pd
import pytest
import requests
import responses

from lib.cli import redact
from lib.data import providers
from lib.data.providers import COLUMNS, download, normalize_yfinance, parse_price_csv
from lib.errors import PipelineError
from tests.helpers import ROOT, default_params

KEY = "s3cr3t-KEY-123"
ROWS = "2024-03-13,517.1,517.3,514.5,515.97,512.72,55104100\n2024-03-14,516.0,516.5,511.0,514.95,511.7,60000000\n"


@pytest.fixture
def cfg():
    c = default_params()["data"]
    c.update(start=None, end=None, retries=2, backoff_s=0.0, tickers=["SPY"])
    return c


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    waits = []
    monkeypatch.setattr(providers, "_sleep", waits.append)
    return waits


@pytest.mark.parametrize(
    "header",
    [
        "date,open,high,low,close,adj_close,volume\n",
        "Date,Open,High,Low,Close,Adj Close,Volume\n",
        "Price,Open,High,Low,Close,Adj Close,Volume\nTicker,SPY,SPY,SPY,SPY,SPY,SPY\nDate,,,,,,\n",
    ],
)
def test_csv_headers_ours_yahoo_and_yfinance(tmp_path, header):
    (tmp_path / "SPY.csv").write_text(header + ROWS)
    df = parse_price_csv(tmp_path / "SPY.csv", "SPY")
    assert list(df["date"].dt.strftime("%Y-%m-%d")) == ["2024-03-13", "2024-03-14"]
    assert df["adj_close"].tolist() == [512.72, 511.7]
    assert df["volume"].iloc[0] == 55104100


def test_csv_corrupt_value_names_file_line_and_column(tmp_path):
    (tmp_path / "SPY.csv").write_text("date,open,high,low,close,adj_close,volume\n" + ROWS.replace("514.95", "51x.9"))
    with pytest.raises(PipelineError, match=r"SPY.csv, line 3: column close has non-numeric value '51x.9'"):
        parse_price_csv(tmp_path / "SPY.csv", "SPY")


def test_csv_bad_date_and_missing_column(tmp_path):
    (tmp_path / "A.csv").write_text("date,open,high,low,close,adj_close,volume\n" + ROWS + "2024-13-45,1,1,1,1,1,1\n")
    with pytest.raises(PipelineError, match=r"A.csv, line 4: date '2024-13-45' is not YYYY-MM-DD"):
        parse_price_csv(tmp_path / "A.csv", "A")
    (tmp_path / "B.csv").write_text("date,open,high,low,adj_close,volume\n2024-01-02,1,1,1,1,1\n")
    with pytest.raises(PipelineError, match=r"missing column\(s\) \['close'\] for B"):
        parse_price_csv(tmp_path / "B.csv", "B")
    (tmp_path / "C.csv").write_text("")
    with pytest.raises(PipelineError, match="C.csv: not a readable CSV"):
        parse_price_csv(tmp_path / "C.csv", "C")


def test_unknown_ticker_lists_what_is_available(cfg):
    cfg["tickers"] = ["NOPE"]
    with pytest.raises(PipelineError, match=r"ticker NOPE: no file .*NOPE.csv; available in .*'SPY'"):
        download(cfg, ROOT / "data" / "sample")


def test_sample_download_long_layout_and_date_cut(cfg):
    cfg.update(tickers=["SPY", "TLT"], start="2010-01-01", end="2010-12-31")
    df = download(cfg, ROOT / "data" / "sample")
    assert list(df.columns) == COLUMNS
    assert set(df["ticker"]) == {"SPY", "TLT"}
    assert df["date"].min() >= pd.Timestamp("2010-01-01") and df["date"].max() <= pd.Timestamp("2010-12-31")
    assert (df.groupby("ticker").size() == 252).all()
    cfg.update(start="2030-01-01", end=None)
    with pytest.raises(PipelineError, match="ticker SPY: no rows between data.start=2030-01-01"):
        download(cfg, ROOT / "data" / "sample")


# ---------------------------------------------------------------------------- yfinance
def _yf_frame(multi: bool, tz: bool = False) -> pd.DataFrame:
    idx = pd.DatetimeIndex(["2024-03-13", "2024-03-14"], name="Date")
    if tz:
        idx = idx.tz_localize("America/New_York")
    data = {
        "Adj Close": [512.72, 511.7],
        "Close": [515.97, 514.95],
        "High": [517.3, 516.5],
        "Low": [514.5, 511.0],
        "Open": [517.1, 516.0],
        "Volume": [55104100, 60000000],
    }
    df = pd.DataFrame(data, index=idx)
    if multi:
        df.columns = pd.MultiIndex.from_product([list(data), ["SPY"]], names=["Price", "Ticker"])
    return df


@pytest.mark.parametrize(("multi", "tz"), [(True, False), (False, False), (False, True)])
def test_yfinance_shapes_normalise(multi, tz):
    df = normalize_yfinance(_yf_frame(multi, tz), "SPY")
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-03-13", "2024-03-14"]
    assert df["adj_close"].tolist() == [512.72, 511.7] and df["open"].tolist() == [517.1, 516.0]


def test_yfinance_download_uses_raw_prices_and_cuts_end(monkeypatch, cfg):
    import yfinance

    calls = []

    def fake(ticker, **kw):
        calls.append(kw)
        return _yf_frame(True)

    monkeypatch.setattr(yfinance, "download", fake)
    cfg.update(source="yfinance", end="2024-03-13")
    df = download(cfg, ROOT / "data" / "sample")
    assert calls[0]["auto_adjust"] is False and calls[0]["end"] == "2024-03-14"  # yfinance's end is exclusive
    assert len(df) == 1 and df["ticker"].iloc[0] == "SPY"


def test_yfinance_offline_noise_is_one_clear_message(monkeypatch, cfg, caplog, capsys):
    """yfinance's own error lines, prints and warnings go to DEBUG; retries name the failure in plain words."""
    import warnings

    import yfinance

    def noisy(t, **kw):
        logging.getLogger("yfinance").error("Failed to get ticker '%s' reason: Could not resolve host", t)
        print("1 Failed download:")
        warnings.warn("pandas noise", FutureWarning, stacklevel=1)
        return pd.DataFrame()

    monkeypatch.setattr(yfinance, "download", noisy)
    cfg.update(source="yfinance", retries=1)
    with caplog.at_level(logging.WARNING), pytest.raises(PipelineError, match="yfinance returned no data"):
        download(cfg, ROOT)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert [r.getMessage() for r in caplog.records] == ["yfinance SPY failed (empty response), retry 1/1 in 0.0s"]


def test_yfinance_empty_frame_retries_then_says_offline(monkeypatch, cfg, no_sleep):
    import yfinance

    monkeypatch.setattr(yfinance, "download", lambda t, **kw: pd.DataFrame())
    cfg.update(source="yfinance", retries=2, backoff_s=0.5)
    with pytest.raises(
        PipelineError, match=r"yfinance returned no data for ticker SPY after 3 tries.*data.source=sample"
    ):
        download(cfg, ROOT / "data" / "sample")
    assert no_sleep == [0.5, 1.0]


# ---------------------------------------------------------------------------- FMP
STABLE_FULL = [
    {
        "symbol": "SPY",
        "date": "2024-03-14",
        "open": 516.0,
        "high": 516.5,
        "low": 511.0,
        "close": 514.95,
        "volume": 60000000,
        "change": -1.0,
        "changePercent": -0.2,
        "vwap": 514.0,
    },
    {
        "symbol": "SPY",
        "date": "2024-03-13",
        "open": 517.1,
        "high": 517.3,
        "low": 514.5,
        "close": 515.97,
        "volume": 55104100,
        "change": 1.0,
        "changePercent": 0.2,
        "vwap": 516.0,
    },
]
STABLE_ADJ = [
    {"symbol": "SPY", "date": d, "adjOpen": 1.0, "adjHigh": 1.0, "adjLow": 1.0, "adjClose": c, "volume": 1}
    for d, c in (("2024-03-14", 511.7), ("2024-03-13", 512.72))
]
FULL_URL = "https://financialmodelingprep.com/stable/historical-price-eod/full"
ADJ_URL = "https://financialmodelingprep.com/stable/historical-price-eod/dividend-adjusted"


@pytest.fixture
def fmp(monkeypatch, cfg, tmp_path):
    monkeypatch.setenv("FMP_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    cfg.update(source="fmp")
    return cfg


@responses.activate
def test_fmp_stable_joins_dividend_adjusted_and_sorts(fmp):
    responses.get(FULL_URL, json=STABLE_FULL)
    responses.get(ADJ_URL, json=STABLE_ADJ)
    df = download(fmp, ROOT)
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-03-13", "2024-03-14"]
    assert df["adj_close"].tolist() == [512.72, 511.7] and df["close"].tolist() == [515.97, 514.95]
    assert responses.calls[0].request.params["symbol"] == "SPY"


@responses.activate
def test_fmp_legacy_v3(fmp):
    recs = [
        {
            "date": r["date"],
            "open": r["open"],
            "high": r["high"],
            "low": r["low"],
            "close": r["close"],
            "adjClose": r["close"] - 3,
            "volume": r["volume"],
        }
        for r in STABLE_FULL
    ]
    responses.get(
        "https://financialmodelingprep.com/api/v3/historical-price-full/SPY", json={"symbol": "SPY", "historical": recs}
    )
    fmp["fmp_endpoint"] = "v3"
    df = download(fmp, ROOT)
    assert df["adj_close"].tolist() == pytest.approx([512.97, 511.95], abs=1e-9)


@responses.activate
def test_fmp_error_message_body_is_reported_without_the_key(fmp):
    responses.get(FULL_URL, status=401, json={"Error Message": f"Invalid API KEY. {KEY} is not valid."})
    with pytest.raises(PipelineError) as err:
        download(fmp, ROOT)
    assert "FMP error for ticker SPY (HTTP 401): Invalid API KEY." in str(err.value)
    assert KEY not in str(err.value)


@responses.activate
def test_fmp_network_error_retries_and_never_shows_the_key(fmp, no_sleep, caplog):
    responses.get(FULL_URL, body=requests.ConnectionError(f"Max retries exceeded with url: /x?apikey={KEY}"))
    fmp["backoff_s"] = 1.0
    with caplog.at_level(logging.WARNING), pytest.raises(PipelineError) as err:
        download(fmp, ROOT)
    msg = str(err.value)
    assert "FMP request for ticker SPY failed after 3 tries (ConnectionError" in msg and "data.source=sample" in msg
    assert KEY not in msg + caplog.text
    assert len(responses.calls) == 3 and no_sleep == [1.0, 2.0]


@responses.activate
def test_fmp_unknown_symbol_and_server_error(fmp):
    responses.get(FULL_URL, json=[])
    responses.get(ADJ_URL, json=[])
    with pytest.raises(PipelineError, match="FMP returned no data for ticker SPY"):
        download(fmp, ROOT)
    responses.replace(responses.GET, FULL_URL, status=503, body="down")
    with pytest.raises(PipelineError, match=r"failed after 3 tries \(HTTP 503"):
        download(fmp, ROOT)


def test_fmp_missing_key_is_one_clear_message(monkeypatch, cfg, tmp_path):
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg.update(source="fmp")
    with pytest.raises(PipelineError, match=r"needs an API key: set FMP_API_KEY .* or in .env"):
        download(cfg, ROOT)


@responses.activate
def test_fmp_key_from_dotenv_is_sent_and_redacted(monkeypatch, cfg, tmp_path):
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"# comment\nexport FMP_API_KEY='{KEY}-env'\n")
    responses.get(FULL_URL, json=STABLE_FULL)
    responses.get(ADJ_URL, json=STABLE_ADJ)
    cfg.update(source="fmp")
    download(cfg, ROOT)
    assert responses.calls[0].request.params["apikey"] == f"{KEY}-env"
    assert redact(f"url?apikey={KEY}-env") == "url?apikey=***"


@responses.activate
def test_fmp_key_is_redacted_in_every_encoding(monkeypatch, fmp):
    """A key with `+ / =` comes back URL-encoded (either case), base64 or JSON-escaped: never shown."""
    import base64
    import re
    from urllib.parse import quote, quote_plus

    key = "Ab+c/D=e"
    monkeypatch.setenv("FMP_API_KEY", key)
    echoes = [
        quote(key, safe=""),
        re.sub("%..", lambda m: m.group().lower(), quote(key, safe="")),
        quote_plus(key),
        base64.b64encode(key.encode()).decode(),
    ]
    responses.get(FULL_URL, status=401, json={"Error Message": "bad key: " + " ".join(echoes)})
    with pytest.raises(PipelineError) as err:
        download(fmp, ROOT)
    msg = str(err.value)
    assert "bad key: *** *** *** ***" in msg
    assert not any(e in msg for e in [key, *echoes])


def test_missing_adj_close_says_what_is_known(tmp_path, caplog):
    """No adjusted column: the close is used as given; whether it excludes dividends is not known."""
    (tmp_path / "SPY.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n"
        + "\n".join(",".join(r.split(",")[:5] + r.split(",")[6:]) for r in ROWS.splitlines())
        + "\n"
    )
    with caplog.at_level(logging.WARNING):
        df = parse_price_csv(tmp_path / "SPY.csv", "SPY")
    assert df["adj_close"].tolist() == df["close"].tolist()
    assert "no adj_close column; close is used as given" in caplog.text
    assert "returns then exclude dividends" not in caplog.text

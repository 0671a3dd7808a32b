import itertools

import pandas as pd
import pytest

from lib.errors import PipelineError
from lib.ml.folds import make_folds
from tests.helpers import default_params

SESSIONS = pd.bdate_range("2010-01-01", periods=2000)


@pytest.fixture
def cfg():
    return default_params()["walk_forward"]


def _pos(date):
    return SESSIONS.get_loc(pd.Timestamp(date))


@pytest.mark.parametrize("window", ["expanding", "rolling"])
def test_folds_are_purged_embargoed_and_in_sequence(cfg, window):
    cfg.update(folds=3, test_sessions=200, purge=7, embargo=3, window=window, train_sessions=800)
    folds = make_folds(SESSIONS, SESSIONS[-6], cfg)
    tests = folds[:-1]
    assert [f.name for f in folds] == ["fold_00", "fold_01", "fold_02", "final"]
    assert tests[-1].test_end == str(SESSIONS[-1].date())
    for a, b in itertools.pairwise(tests):
        assert _pos(b.test_start) == _pos(a.test_end) + 1
    for f in tests:
        assert _pos(f.test_end) - _pos(f.test_start) + 1 == 200
        assert _pos(f.test_start) - _pos(f.val_end) - 1 == 7 + 3  # purge + embargo before the test
        assert _pos(f.val_start) - _pos(f.fit_end) - 1 == 7  # purge before validation
        if window == "rolling":
            assert _pos(f.val_end) - _pos(f.fit_start) + 1 == 800
        else:
            assert f.fit_start == str(SESSIONS[0].date())
    final = folds[-1]
    assert final.val_end == str(SESSIONS[-6].date()) and final.test_start is None


def test_too_many_folds_is_a_clear_error(cfg):
    cfg.update(folds=10, test_sessions=200)
    with pytest.raises(PipelineError, match="folds x test_sessions = 2000 sessions, but the features span only 2000"):
        make_folds(SESSIONS, SESSIONS[-1], cfg)
    cfg.update(folds=9, test_sessions=220)
    with pytest.raises(PipelineError, match="fold_00 has 0 training sessions"):
        make_folds(SESSIONS, SESSIONS[-1], cfg)

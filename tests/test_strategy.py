import numpy as np
import pandas as pd

from lib.portfolio.calendar import decision_days
from lib.portfolio.policy import target_weights


def test_weekly_decisions_are_last_session_of_each_week():
    dates = pd.DatetimeIndex(
        [
            "2024-03-25",
            "2024-03-26",
            "2024-03-27",
            "2024-03-28",  # Good Friday closed
            "2024-04-01",
            "2024-04-05",
            "2024-04-08",
            "2024-04-09",
        ]
    )
    assert decision_days(dates, "weekly").tolist() == [False, False, False, True, False, True, False, False]


def test_final_row_counts_only_when_its_period_is_over():
    thursday = pd.DatetimeIndex(["2024-09-11", "2024-09-12"])
    friday = pd.DatetimeIndex(["2024-09-12", "2024-09-13"])
    assert decision_days(thursday, "weekly").tolist() == [False, False]
    assert decision_days(friday, "weekly").tolist() == [False, True]
    month_end = pd.DatetimeIndex(["2024-05-30", "2024-05-31", "2024-06-03"])
    assert decision_days(month_end, "monthly").tolist() == [False, True, False]
    assert decision_days(month_end, "daily").all()


def test_target_weights_rule():
    pred = np.array([0.02, 0.001, -0.001, -0.02, np.nan])
    np.testing.assert_array_equal(target_weights(pred, 0.005, False), [1, 0, 0, 0, np.nan])
    np.testing.assert_array_equal(target_weights(pred, 0.005, True), [1, 0, 0, -1, np.nan])
    np.testing.assert_array_equal(target_weights(pred, 0.0, False), [1, 1, 0, 0, np.nan])

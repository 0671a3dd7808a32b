"""The library behind the stages, in packages by concern; imports flow one way:

    data -> ml -> portfolio -> evaluation -> reporting

and every package may use the plumbing at the top (`errors`, `params`, `io`, `cli`, `tables`),
which imports none of them (`tests/test_layout.py` checks both rules).
"""

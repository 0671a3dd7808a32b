"""Judging a result: book performance and forecast quality (IC, spread), Sharpe inference (PSR,
DSR, MinTRL), resampling (bootstrap, Monte Carlo, SPA, permutations), the study that assembles
them, the verdict and the trials ledger. May import `lib.portfolio` (its nulls re-run the backtest),
the packages below it and the plumbing.
"""

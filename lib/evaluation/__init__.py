"""Judging a result: one shape for a value that may be undefined (`estimate`: an `Estimate` is a
value or None with its reason; a `Section` names them, nests, and writes metrics.json), book
performance and forecast quality (the one rank IC, per-date IC, spread), Sharpe inference (PSR,
DSR, MinTRL), resampling (bootstrap, Monte Carlo, SPA), the permutation null, the study that assembles
them, the verdict and the trials ledger. May import `lib.portfolio` (its nulls re-run the backtest),
the packages below it and the plumbing.
"""

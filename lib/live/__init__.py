"""The forward track record, the one period nobody tuned: the weekly decisions in a hash-chained
ledger (`ledger`: `track/ledger.csv`, committed to git, never rewritten), marked to market by the
backtest's own kernel and costs and judged beside the backtest (`mark`), drift of this week's
features and IC against the training window and the backtest (`drift`), the retraining policy
that moves the training cutoff (`retrain`), and the weekly routine's step before `dvc repro`
(`weekly`). May import `lib.data`, `lib.ml`, `lib.portfolio`,
`lib.evaluation` and the plumbing (it sits between evaluation and reporting).
"""

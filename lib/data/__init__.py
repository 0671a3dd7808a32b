"""Market data: the providers that fetch daily bars (sample, CSV, yfinance, FMP), the store of fetched bars and
its incremental refresh (`store`, `refresh`), the exchange calendar (`calendar`: real sessions), the validation
checks and repairs of a price table, price helpers, the features and labels built from bars (the basic
set, alpha158, their per-date normalisation), the training rows at a cutoff (`cutoff`), and the point-in-time
universe (`membership`: an index's membership history and its member mask).
Imports only the plumbing (`lib.errors`, `lib.io`, `lib.cli`, `lib.tables`, `lib.params`).
"""

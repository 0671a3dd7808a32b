"""Market data: the providers that fetch daily bars (sample, CSV, yfinance, FMP), the validation
checks and repairs of a price table, price helpers, and the features and labels built from bars.
Imports only the plumbing (`lib.errors`, `lib.io`, `lib.cli`, `lib.tables`, `lib.params`).
"""

"""From predictions to trades: the rebalance calendar, the policy (rules, filters, sizing, limits),
the execution kernel shared by the vectorized and event engines, and the books, orders and
attribution of a backtest. May import `lib.data`, `lib.ml` and the plumbing.
"""

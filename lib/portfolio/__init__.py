"""From predictions to trades: the rebalance calendar (`calendar`), the policy (`policy`: rules,
filters, sizing, limits; `targets`: the target book on decision days), the execution kernel
(`kernel`) shared by the vectorized and event engines (`vectorized`, `event`; `run` picks one),
the prices they fill and mark at (`market`, `delisting`), their settings (`config`), the trade
log and result (`ledger`), the books, orders and attribution of a backtest (`backtest`), and the
point-in-time universe in them (`universe`: the member mask, buy-and-hold over the members).
May import `lib.data`, `lib.ml` and the plumbing.
"""

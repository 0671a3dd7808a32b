"""Shared library of the LSTM trading-research pipeline (one module per concern)."""

"""Models and their training: the panel of windows, walk-forward folds, the model contract and its
families, the torch runtime and fit loop (determinism, AMP, checkpoints), the trainer across folds
and workers, the baseline models trained beside the model (`baselines`), DDP, and the model card.
May import `lib.data` and the plumbing.
"""

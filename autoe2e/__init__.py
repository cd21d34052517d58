"""AutoE2E: multi-camera driving data preparation, model, training and evaluation (Flyte-free)."""

__version__ = "0.1.0"

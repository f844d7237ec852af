"""LLaMA-Factory recipes and the Answer + Evaluate reasoning pipeline."""

__version__ = "0.1.0"

"""Measuring models: evaluation metrics, synthetic data and the quality benchmark against baselines."""

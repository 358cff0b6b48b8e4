"""Evaluation: perplexity base vs SFT (more metrics and the report are built on this)."""

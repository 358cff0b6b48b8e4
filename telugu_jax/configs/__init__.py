"""The configs shipped with the package: `python -m telugu_jax.train --config configs/lora.py` (the repository's
`configs/` folder is this one), or by name from anywhere: `--config lora`. Each file's `get_config()` returns a
ConfigDict; derived configs import the one they shrink (`from telugu_jax.configs import lora`).
Load them with `telugu_jax.config.load_config`, never by importing them in library code."""

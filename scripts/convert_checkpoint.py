"""Convert a PyTorch checkpoint into a telugu-jax model directory: a thin wrapper over
`python -m telugu_jax.convert` (same arguments; see its --help)."""

import sys

from telugu_jax.convert.__main__ import main

if __name__ == "__main__":
  sys.exit(main())

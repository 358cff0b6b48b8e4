"""Convert a PyTorch checkpoint into a telugu-jax model directory: a thin wrapper over
`python -m telugu_jax.convert` (same arguments; see its --help)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works from a checkout too

from telugu_jax.convert.__main__ import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())

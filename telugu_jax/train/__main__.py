"""`python -m telugu_jax.train --config configs/lora.py [--config.optim.lr=1e-4 ...] [--debug]`

`config.objective` picks the objective: "sft" (default; SFT or pretraining) or "dpo" (configs/dpo.py).
Overrides are checked against the config file: a mistyped key is a one-line error listing the valid keys.
"""

from __future__ import annotations

import os
import sys

from telugu_jax.config import ConfigError, load_config, split_config_args
from telugu_jax.errors import run_cli


def use_compilation_cache() -> None:
  """Keep compiled steps on disk, so a second start of the same config (a resume, a rerun with another
  learning rate) skips most of XLA's compile: JAX_COMPILATION_CACHE_DIR when set, else a user cache folder."""
  import jax

  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return   # JAX reads it itself
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  jax.config.update("jax_compilation_cache_dir", os.path.join(root, "telugu_jax", "jax"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: list[str]) -> int:
  spec, overrides, rest = split_config_args(argv)
  if rest:
    raise ConfigError(f"unexpected arguments {rest}; overrides look like --config.optim.lr=1e-4")
  if spec is None:
    raise ConfigError("--config is required, e.g. --config configs/lora.py")
  from telugu_jax.train import cpu
  from telugu_jax.train.settings import RunSettings

  config = load_config(spec, overrides)
  run = RunSettings.from_config(config)
  plan = cpu.apply(run)
  if plan is not None:   # before JAX starts its backend: later, XLA_FLAGS are not read
    if plan.mesh_shape is not None:   # in the config too, so WORKDIR/config.json says what ran
      config.mesh.shape = plan.mesh_shape
      run = RunSettings.from_config(config)
    print(f"CPU recipe: {plan.why}; XLA_FLAGS={plan.xla_flags!r}"
          + (f", mesh.shape={plan.mesh_shape}" if plan.mesh_shape else "")
          + " (set XLA_FLAGS yourself, even empty, to choose otherwise)")
  from telugu_jax.train.sharding import maybe_initialize_distributed

  maybe_initialize_distributed()   # before any other JAX call; a no-op on one host
  use_compilation_cache()
  from telugu_jax.train.loop import train_and_evaluate

  result = train_and_evaluate(run)
  print(f"model written to {result.model_dir} (step {result.exported_step}) after {result.steps} steps"
        + (f"; best val loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else ""))
  t = result.timings
  print(f"time: set-up {t['setup_s']:.1f} s, first step (with compilation) {t['first_step_s']:.1f} s, other steps "
        f"{t['later_steps_s']:.1f} s, saving and export {t['save_export_s']:.1f} s, total {t['total_s']:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))

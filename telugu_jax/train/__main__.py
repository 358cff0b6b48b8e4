"""`python -m telugu_jax.train --config configs/lora.py [--config.optim.lr=1e-4 ...]`

`config.objective` picks the objective: "sft" (default; SFT or pretraining) or "dpo" (configs/dpo.py).

Overrides are checked against the config file: a mistyped key is an error, not a silent no-op.
"""

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file with get_config()",
                                          lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.optim.lr=1e-4")
  from telugu_jax.train.loop import TrainingError, train_and_evaluate

  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/lora.py")
  run = train_and_evaluate
  if config.get("objective", "sft") == "dpo":
    from telugu_jax.dpo.train import train_dpo as run
  elif config.get("objective", "sft") != "sft":
    raise app.UsageError(f"config.objective={config.objective!r}; use 'sft' (also pretraining) or 'dpo'")
  try:
    result = run(config)
  except TrainingError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"model written to {result.model_dir} after {result.steps} steps"
        + (f"; best val loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else ""))


if __name__ == "__main__":
  app.run(main)

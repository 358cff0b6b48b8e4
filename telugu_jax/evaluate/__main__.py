"""`python -m telugu_jax.evaluate --config configs/eval.py [--config.output=runs/x/eval ...] [--debug]`

Evaluates every system in the config (perplexity, answers, automatic metrics), exports blind rating sheets,
and writes OUTPUT/results.json, answers.jsonl and report.html. After raters return their sheets:

    python -m telugu_jax.evaluate --config configs/eval.py --config.mode=report \\
        --config.rating.sheets='("ratings/alice.csv","ratings/bob.csv")'
"""

from __future__ import annotations

import sys

from telugu_jax.config import ConfigError, load_config, split_config_args
from telugu_jax.errors import UserError, run_cli


def main(argv: list[str]) -> int:
  spec, overrides, rest = split_config_args(argv)
  if rest:
    raise ConfigError(f"unexpected arguments {rest}; overrides look like --config.output=runs/x/eval")
  if spec is None:
    raise ConfigError("--config is required, e.g. --config configs/eval.py")
  from absl import logging

  from telugu_jax.evaluate.rating import RatingSheetError
  from telugu_jax.evaluate.run import EvaluationError, run
  from telugu_jax.evaluate.settings import EvalSettings, EvalSettingsError

  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  try:
    results = run(EvalSettings.from_config(load_config(spec, overrides)))
  except (EvaluationError, RatingSheetError, EvalSettingsError) as e:
    raise UserError(str(e)) from None
  print(f"report: {results['files']['report']}\nresults: {results['files']['results']}")
  if results.get("rating_kit"):
    print(f"rating sheets: {', '.join(results['rating_kit']['sheets'])} (key: {results['rating_kit']['key']})")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))

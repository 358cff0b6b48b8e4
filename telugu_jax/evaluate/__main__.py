"""`python -m telugu_jax.evaluate --config configs/eval.py [--config.output=runs/x/eval ...]`

Evaluates every system in the config (perplexity, answers, automatic metrics), exports blind rating sheets,
and writes OUTPUT/results.json, answers.jsonl and report.html. After raters return their sheets:

    python -m telugu_jax.evaluate --config configs/eval.py --config.mode=report \\
        --config.rating.sheets='("ratings/alice.csv","ratings/bob.csv")'
"""

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/eval.py or a copy of it", lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.output=runs/x/eval")
  from absl import logging

  from telugu_jax.evaluate.rating import RatingSheetError
  from telugu_jax.evaluate.run import EvaluationError, run

  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/eval.py")
  try:
    results = run(config)
  except (EvaluationError, RatingSheetError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"report: {results['files']['report']}\nresults: {results['files']['results']}")
  if results.get("rating_kit"):
    print(f"rating sheets: {', '.join(results['rating_kit']['sheets'])} (key: {results['rating_kit']['key']})")


if __name__ == "__main__":
  app.run(main)

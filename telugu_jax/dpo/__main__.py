"""DPO data and tools: `python -m telugu_jax.dpo COMMAND ...` (training itself: `python -m telugu_jax.train
--config configs/dpo.py`).

    read        upstream preference data (Anthropic HH, UltraFeedback-binarised, our pairs JSONL, bilingual
                en_*/te_* pair columns, CSV/TSV/Parquet) -> pairs JSONL
                python -m telugu_jax.dpo read --in hh.jsonl.gz --out runs/prefs/hh [--format auto]
                  [--lang-columns auto|te|en|translit] [--fields prompt=COL,...] [--where COL=VALUE]
    pairs       pairs from the SFT model's own samples, ranked by rules and/or a judge endpoint
                python -m telugu_jax.dpo pairs --model runs/lora --in data/sft/train.jsonl --out runs/prefs/self -k 4
    demo-pairs  rule-made pairs from the bundled conversations (see telugu_jax/dpo/demo.py)
                python -m telugu_jax.dpo demo-pairs --out runs/demo/prefs
    demo        demo pairs + a short DPO run on the demo's SFT model (after `make demo`)
                python -m telugu_jax.dpo demo --workdir runs/demo
    eval        reward accuracy / margin / KL of a DPO model on held-out pairs
                python -m telugu_jax.dpo eval --model runs/dpo --pairs runs/demo/prefs/val.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from telugu_jax.errors import UserError, run_cli


def _print(obj) -> None:
  print(json.dumps(obj, ensure_ascii=False, indent=1))


def demo_config(workdir: str, paths: dict, steps: int):
  """configs/dpo_demo.py with this demo's paths and step count."""
  from telugu_jax.config import load_config
  from telugu_jax.train.settings import RunSettings

  return RunSettings.from_config(load_config("dpo_demo", [
      f"--config.workdir={os.path.join(workdir, 'dpo')}", f"--config.base={os.path.join(workdir, 'sft')}",
      f"--config.data.train={paths['train']}", f"--config.data.validation={paths['val']}",
      f"--config.train.max_steps={steps}", f"--config.train.eval_every={max(steps // 2, 1)}",
      f"--config.train.save_every={steps}"]))


def _main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.dpo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  r = sub.add_parser("read", help="upstream preference data -> pairs JSONL")
  r.add_argument("--in", dest="inputs", nargs="+", required=True)
  r.add_argument("--out", required=True)
  r.add_argument("--format", default="auto", help="auto | hh | ultrafeedback | pairs")
  r.add_argument("--source")
  r.add_argument("--split", help="split of a datasets directory")
  r.add_argument("--fields", help="schema field = file column, e.g. prompt=te_question,chosen=te_chosen")
  r.add_argument("--lang-columns", default="auto", choices=("auto", "te", "en", "translit"),
                 help="which language of side-by-side bilingual columns (auto: Telugu)")
  r.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                 help="keep only rows with this value (repeatable); the rest are counted as filtered")
  r.add_argument("--force", action="store_true")
  g = sub.add_parser("pairs", help="pairs from the SFT model's samples")
  g.add_argument("--model", required=True)
  g.add_argument("--in", dest="inputs", nargs="+", required=True, help="Conversation JSONL: the prompts")
  g.add_argument("--out", required=True)
  g.add_argument("-k", type=int, default=4)
  g.add_argument("--temperature", type=float, default=0.9)
  g.add_argument("--top-p", type=float, default=0.95)
  g.add_argument("--max-new-tokens", type=int, default=256)
  g.add_argument("--ranking", default="rules", choices=("rules", "judge", "both"))
  g.add_argument("--min-gap", type=float, default=0.1)
  g.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
  g.add_argument("--judge-model")
  g.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
  g.add_argument("--seed", type=int, default=0)
  d = sub.add_parser("demo-pairs", help="rule-made pairs from the bundled conversations")
  d.add_argument("--out", required=True)
  m = sub.add_parser("demo", help="demo pairs + a short DPO run on WORKDIR/sft")
  m.add_argument("--workdir", default="runs/demo")
  m.add_argument("--steps", type=int, default=60)
  e = sub.add_parser("eval", help="reward accuracy and margin on held-out pairs")
  e.add_argument("--model", required=True)
  e.add_argument("--pairs", nargs="+", required=True)
  e.add_argument("--reference", help="reference model dir (default: the model's adapter switched off)")
  e.add_argument("--beta", type=float, default=0.1)
  e.add_argument("--loss-type", default="sigmoid", choices=("sigmoid", "ipo"))
  e.add_argument("--max-seq-len", type=int, default=1024)
  e.add_argument("--group-by", help="a meta key to break the numbers down by, e.g. rejected_by")
  args = p.parse_args(argv)

  try:
    if args.command == "read":
      from telugu_jax.dpo.records import run_read

      columns = {k: v for k, v in (("fields", args.fields), ("where", args.where)) if v}
      if args.lang_columns != "auto":
        columns["lang_columns"] = args.lang_columns
      _print(run_read(args.inputs, args.out, args.format, args.source, split=args.split, force=args.force,
                      **columns))
    elif args.command == "pairs":
      from telugu_jax.dpo.pairs import PairConfig, run_pairs

      client = None
      if args.judge_url:
        if not args.judge_model:
          raise ValueError("--judge-url needs --judge-model")
        from telugu_jax.data.translate.client import ChatClient

        client = ChatClient(base_url=args.judge_url, model=args.judge_model, api_key_env=args.judge_key_env)
      cfg = PairConfig(k=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                       ranking=args.ranking, min_gap=args.min_gap, seed=args.seed)
      _print(run_pairs(args.model, args.inputs, args.out, cfg, judge_client=client))
    elif args.command == "demo-pairs":
      from telugu_jax.dpo.demo import prepare_demo_pairs

      _print(prepare_demo_pairs(args.out))
    elif args.command == "demo":
      from telugu_jax.dpo.demo import prepare_demo_pairs
      from telugu_jax.dpo.evaluate import score_pairs
      from telugu_jax.dpo.train import train_dpo
      from telugu_jax.model.io import load_model

      paths = prepare_demo_pairs(os.path.join(args.workdir, "prefs"))
      from telugu_jax.train.loop import TrainingError

      c = demo_config(args.workdir, paths, args.steps)
      try:
        result = train_dpo(c)
      except TrainingError as err:
        raise ValueError(str(err)) from None
      report = score_pairs(load_model(result.model_dir), [paths["val"]], beta=c.dpo.beta,
                           max_seq_len=c.data.max_seq_len, group_by="rejected_by")
      print(f"DPO model: {result.model_dir}\nheld-out pairs (policy vs the SFT reference; at step 0 every reward "
            "is 0, the loss log 2):")
      _print(report)
    elif args.command == "eval":
      from telugu_jax.dpo.evaluate import score_pairs
      from telugu_jax.model.io import load_model

      ref = load_model(args.reference) if args.reference else None
      _print(score_pairs(load_model(args.model), args.pairs, reference=ref, beta=args.beta, loss_type=args.loss_type,
                         max_seq_len=args.max_seq_len, group_by=args.group_by))
  except UserError:
    raise  # already one line; --debug shows where it came from
  except (ValueError, FileNotFoundError) as err:
    raise UserError(str(err)) from err
  return 0


def main(argv: list[str] | None = None) -> int:
  """The command line under telugu_jax.errors.run_cli: a user's mistake is one line and exit code 2."""
  return run_cli(_main, argv)


if __name__ == "__main__":
  sys.exit(main())

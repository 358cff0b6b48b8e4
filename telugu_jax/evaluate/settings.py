"""Typed settings of an evaluation, built once from configs/eval.py at the edge (`EvalSettings.from_config`).

Each section of the config is a frozen dataclass here; the evaluation code reads only these, so a config that
lacks a setting fails when it is loaded, naming the key, not halfway through an evaluation.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from telugu_jax.config import section_fields


class EvalSettingsError(ValueError):
  pass


def _section(cls, section: Any, name: str):
  return cls(**section_fields(cls, section, name, error=EvalSettingsError))


@dataclasses.dataclass(frozen=True)
class DataPaths:
  heldout: str = ""        # held-out conversations: assistant-token perplexity, answers
  prose: str = ""          # held-out raw Telugu: forgetting


@dataclasses.dataclass(frozen=True)
class QuestionSettings:
  path: str = "bundled"
  limit: int = 0
  per_category: int = 0


@dataclasses.dataclass(frozen=True)
class HeldoutAnswers:
  limit: int = 0           # 0 all, N the first N, -1 none


@dataclasses.dataclass(frozen=True)
class PerplexitySettings:
  max_seq_len: int = 512
  batch_size: int = 8


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  max_new_tokens: int = 128
  temperature: float = 0.0
  top_p: float = 1.0
  repetition_penalty: float = 1.0
  seed: int = 0
  batch_size: int = 16


@dataclasses.dataclass(frozen=True)
class RatingSettings:
  raters: tuple[str, ...] = ("rater1", "rater2")
  seed: int = 0
  sheets: tuple[str, ...] = ()
  key: str = ""


@dataclasses.dataclass(frozen=True)
class ReportSettings:
  samples: int = 12


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  mode: str
  systems: dict                # name -> run folder or model directory (insertion order: the report's order)
  baseline: str
  output: str
  data: DataPaths
  questions: QuestionSettings
  heldout_answers: HeldoutAnswers
  perplexity: PerplexitySettings
  generation: GenerationSettings
  rating: RatingSettings
  report: ReportSettings
  tasks: dict                  # name -> that benchmark task's Settings (telugu_jax.evaluate.tasks)
  config_json: str = "{}"      # the config as given, for results.json

  @classmethod
  def from_config(cls, cfg: Any) -> EvalSettings:
    from telugu_jax.evaluate import tasks

    known = {f.name for f in dataclasses.fields(cls)} - {"config_json"}
    if unknown := sorted(set(cfg.keys()) - known):
      raise EvalSettingsError(f"unknown config keys {unknown}; an evaluation config has {sorted(known)}")
    systems = cfg.systems.to_dict() if hasattr(cfg.systems, "to_dict") else dict(cfg.systems)
    return cls(mode=cfg.mode, systems=systems, baseline=cfg.baseline, output=cfg.output,
               data=_section(DataPaths, cfg.data, "data"),
               questions=_section(QuestionSettings, cfg.questions, "questions"),
               heldout_answers=_section(HeldoutAnswers, cfg.heldout_answers, "heldout_answers"),
               perplexity=_section(PerplexitySettings, cfg.perplexity, "perplexity"),
               generation=_section(GenerationSettings, cfg.generation, "generation"),
               rating=_section(RatingSettings, cfg.rating, "rating"),
               report=_section(ReportSettings, cfg.report, "report"),
               tasks=tasks.settings_from_config(cfg.tasks if "tasks" in cfg else None),
               config_json=cfg.to_json_best_effort() if hasattr(cfg, "to_json_best_effort") else json.dumps(cfg))

  def config_dict(self) -> dict:
    return json.loads(self.config_json)

"""English <-> Telugu translation on FLORES-200 sentences as SIB-200 publishes them: chrF++ and BLEU.

Input: two TSV files with the header `index_id, category, text` (e.g. `sib200_eng_Latn_test.tsv` and
`sib200_tel_Telu_test.tsv`), line-aligned: line i of both has the same `index_id` (checked; a mismatch is an
error naming the line). Each pair is asked both ways in the chat format, with a fixed Telugu instruction,
and answered greedily; `k` earlier exchanges come from the train files (`train_en`, `train_te`), or, without
them, from the first k pairs, which are then not scored. Corpus chrF++ and BLEU with sacrebleu (the same
functions as the rest of the evaluation: `metrics.chrf_pp`, `metrics.bleu`, 13a tokenisation).
"""

from __future__ import annotations

import dataclasses

from telugu_jax.data.records import Turn
from telugu_jax.evaluate import metrics
from telugu_jax.evaluate.tasks.common import (
  TaskDataError,
  few_shot,
  generate_answers,
  limited,
  read_flores_tsv,
  shot_turns,
)

EN_TE = "ఈ ఆంగ్ల వాక్యాన్ని తెలుగులోకి అనువదించండి:\n{}"
TE_EN = "ఈ తెలుగు వాక్యాన్ని ఆంగ్లంలోకి అనువదించండి:\n{}"


@dataclasses.dataclass(frozen=True)
class Settings:
  en: str = ""
  te: str = ""
  train_en: str = ""
  train_te: str = ""
  limit: int = 0
  k: int = 0
  max_new_tokens: int = 128

  def inputs(self) -> tuple[str, ...]:
    return (self.en, self.te) + ((self.train_en, self.train_te) if self.k and (self.train_en or self.train_te) else ())


def read_pairs(en_path: str, te_path: str) -> list[dict]:
  """{index_id, en, te} per line of two aligned files."""
  en, te = read_flores_tsv(en_path), read_flores_tsv(te_path)
  if len(en) != len(te):
    raise TaskDataError(f"{en_path} has {len(en)} sentences, {te_path} {len(te)}: the files must be line-aligned")
  pairs = []
  for a, b in zip(en, te, strict=True):
    if a["index_id"] != b["index_id"]:
      raise TaskDataError(f"{en_path}:{a['line']} has index_id {a['index_id']}, {te_path}:{b['line']} "
                          f"{b['index_id']}: the files must be line-aligned by index_id")
    pairs.append({"index_id": a["index_id"], "en": a["text"], "te": b["text"]})
  return pairs


def run(loaded, settings: Settings, *, batch_size: int = 16) -> tuple[dict, list[dict]]:
  pairs = read_pairs(settings.en, settings.te)
  train = read_pairs(settings.train_en, settings.train_te) if settings.k and settings.train_en else None
  shots, pairs = few_shot(pairs, train, settings.k)
  pairs = limited(pairs, settings.limit)
  out: dict = {"n": len(pairs), "k": len(shots)}
  rows: list[dict] = []
  for direction, src, tgt, template in (("en_te", "en", "te", EN_TE), ("te_en", "te", "en", TE_EN)):
    history = shot_turns([(template.format(s[src]), s[tgt]) for s in shots])
    prompts = [[*history, Turn("user", template.format(p[src]))] for p in pairs]
    answers = generate_answers(loaded, prompts, max_new_tokens=settings.max_new_tokens, batch_size=batch_size)
    hyps, refs = [a.text for a in answers], [p[tgt] for p in pairs]
    out[f"chrf_pp_{direction}"] = metrics.chrf_pp(hyps, refs)
    out[f"bleu_{direction}"] = metrics.bleu(hyps, refs)
    out[f"errors_{direction}"] = sum(a.error is not None for a in answers)
    rows += [{"id": f"{p['index_id']}:{direction}", "prompt": p[src], "reference": p[tgt], "text": a.text,
              "error": a.error} for p, a in zip(pairs, answers, strict=True)]
  return out, rows

"""The report's "Public Telugu benchmarks" section: one table per task (every number tagged with its
results.json path, as in the rest of the report) and one plot of each task's main metrics per system."""

from __future__ import annotations

import html

COLUMNS = {  # task -> (results key, column label); the first ones are plotted
    "bpb": (("bits_per_byte", "bits/byte"), ("bits_per_char", "bits/char"), ("token_ppl", "token ppl"),
            ("tokens", "tokens"), ("bytes", "bytes"), ("window", "window"), ("stride", "stride")),
    "translation": (("chrf_pp_en_te", "chrF++ en→te"), ("chrf_pp_te_en", "chrF++ te→en"), ("bleu_en_te", "BLEU en→te"),
                    ("bleu_te_en", "BLEU te→en"), ("k", "k")),
    "tydiqa": (("exact_match", "EM %"), ("f1", "F1 %"), ("contains", "contains %"), ("k", "k")),
    "mgsm": (("accuracy", "accuracy %"), ("no_number", "no number"), ("k", "k")),
    "sib200": (("accuracy", "accuracy %"), ("chance", "chance %"), ("k", "k")),
}
PLOTTED = {"bpb": 2, "translation": 4, "tydiqa": 3, "mgsm": 1, "sib200": 2}
TITLES = {"bpb": "Bits per byte on held-out text", "translation": "Translation (FLORES-200 / SIB-200)",
          "tydiqa": "Closed-book QA (TyDi QA GoldP te)", "mgsm": "Math word problems (MGSM te)",
          "sib200": "Topic classification by likelihood (SIB-200 te)"}
NOTE = ("Bits per byte: NLL of bos + each document's tokens (no eos), in bits, over the documents' UTF-8 bytes; "
        "comparable across tokenizers. chrF++/BLEU: sacrebleu, greedy answers. TyDi QA: closed book, after "
        "removing punctuation and ZWNJ (case markers kept). MGSM: the last number of the answer. SIB-200: the "
        "most likely of 7 Telugu topic names; chance 14.29%. Percentages are 0-100.")


def plot(results: dict, names: list[str]) -> str:
  from telugu_jax.evaluate.report import _bars, _figure, _get, _img

  systems = list(results["systems"])
  fig = _figure(4 * len(names), 3.4)
  axes = fig.subplots(1, len(names), squeeze=False)[0]
  for ax, name in zip(axes, names, strict=True):
    cols = COLUMNS[name][:PLOTTED[name]]
    series = {s: [_get(results, f"systems/{s}/tasks/{name}/{k}") for k, _ in cols] for s in systems}
    _bars(ax, [label for _, label in cols], series, name)
    ax.set_title(name)
  axes[-1].legend(loc="upper left", bbox_to_anchor=(1, 1))
  return _img("tasks", fig, "benchmark metrics per system")


def tasks_section(results: dict) -> str:
  from telugu_jax.evaluate.report import _get, _num

  systems = list(results["systems"])
  names = [n for n in COLUMNS if any(_get(results, f"systems/{s}/tasks/{n}") for s in systems)]
  skipped = results.get("skipped_tasks") or {}
  note = "".join(f'<p class="note">{html.escape(n)} skipped: {html.escape(w)}</p>' for n, w in skipped.items())
  if not names:
    return note + '<p class="note">No benchmark task ran (configure <code>config.tasks</code>).</p>'
  parts = [f'<p class="note">{html.escape(NOTE)}</p>', plot(results, names)]
  for name in names:
    cols = COLUMNS[name]
    extra = (("perplexity/prose/ppl", "ppl prose (own tokens)"),) if name == "bpb" else ()
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in (("n", "n"), *cols, *extra, ("seconds", "s")))
    body = []
    for s in systems:
      if _get(results, f"systems/{s}/tasks/{name}") is None:
        continue
      cells = "".join(_num(results, f"systems/{s}/tasks/{name}/{k}") for k in ("n", *(k for k, _ in cols)))
      cells += "".join(_num(results, f"systems/{s}/{p}") for p, _ in extra)
      cells += _num(results, f"systems/{s}/tasks/{name}/seconds")
      body.append(f"<tr><th>{html.escape(s)}</th>{cells}</tr>")
    parts.append(f'<h3>{html.escape(TITLES[name])}</h3><table id="task-{name}"><tr><th>system</th>{head}</tr>'
                 f'{"".join(body)}</table>')
  return "".join(parts) + note

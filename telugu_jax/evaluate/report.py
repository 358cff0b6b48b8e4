"""One self-contained HTML report from results.json and the answers: tables, plots, sample answers.

The plots are drawn with matplotlib's object API (no pyplot global state) and embedded as base64 PNG, so
the file can be mailed or archived alone. Plot labels are in English (matplotlib's default fonts have no
Telugu glyphs, and matplotlib does not shape Telugu conjuncts); Telugu text goes in HTML tables, and a Telugu
system or category name is drawn as [n] in a plot and named in HTML beside it (`_plot_text_key`). The Telugu
font is embedded too (`telugu_jax.webfont.embedded_css`, about 115 KB), so a machine with no Telugu font shows
letters, not boxes.

Every number taken from results.json sits in an element with `data-path` = its '/'-separated path in the
JSON, so a script (and the test) can check that the page shows what the JSON holds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Sequence

from telugu_jax import webfont

CSS = """
body{font-family:"Noto Sans Telugu Subset","Noto Sans Telugu","Noto Sans",system-ui,sans-serif}
body{margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0} th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.answers td{max-width:340px;white-space:pre-wrap} .answers div.box{max-height:220px;overflow:auto}
.badge{font-size:.8em;padding:1px 5px;border-radius:3px;background:#eee;margin-right:4px}
.ok{background:#d9f2d9} .bad{background:#f8d7d7} .warn{color:#a00} img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em}
"""
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def fmt(value) -> str:
  """How a number is shown (the test formats the JSON value the same way)."""
  if value is None:
    return "–"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return str(value)
  return f"{value:.2f}"


def _get(tree, path: str):
  for k in path.split("/"):
    if not isinstance(tree, dict) or k not in tree:
      return None
    tree = tree[k]
  return tree


def _num(results: dict, path: str) -> str:
  return f'<td class="num" data-path="{html.escape(path)}">{fmt(_get(results, path))}</td>'


def _png(fig) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_text_key(fig) -> str:
  """Puts plot text that is not Latin (a Telugu system or category name: matplotlib's fonts have no Telugu
  glyphs and it does not shape conjuncts) as [1], [2], ... in the figure; returns the HTML that names them."""
  from matplotlib.text import Text

  key: dict[str, str] = {}

  def short(text: str) -> str:
    return text if all(ord(c) < 0x250 for c in text) else key.setdefault(text, f"[{len(key) + 1}]")

  with warnings.catch_warnings():  # tick labels of categorical axes exist only once drawn; this draw measures
    warnings.simplefilter("ignore")  # the Telugu ones ("Glyph missing from font"), which are then replaced
    fig.draw_without_rendering()
  for ax in fig.axes:
    for axis in (ax.xaxis, ax.yaxis):
      labels = axis.get_ticklabels()
      if any(short(t.get_text()) != t.get_text() for t in labels):
        axis.set_ticks(axis.get_ticklocs(), labels=[short(t.get_text()) for t in labels],
                       rotation=labels[0].get_rotation(), ha=labels[0].get_ha())
  for text in fig.findobj(Text):  # titles, legend entries
    text.set_text(short(text.get_text()))
  names = "; ".join(f"{k} {html.escape(name)}" for name, k in key.items())
  return f'<p class="note plot-key">{names}</p>' if key else ""


def _img(name: str, fig, alt: str) -> str:
  key = _plot_text_key(fig)
  return f'<p><img data-plot="{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}"></p>{key}'


def _figure(w: float, h: float):
  from matplotlib.figure import Figure

  return Figure(figsize=(w, h))


def _bars(ax, groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str) -> None:
  """Grouped bars: one group per x label, one bar per series (system); missing values leave a gap."""
  n = max(len(series), 1)
  width = 0.8 / n
  for k, (name, values) in enumerate(series.items()):
    xs = [i + (k - (n - 1) / 2) * width for i in range(len(groups))]
    ys = [float("nan") if v is None else v for v in values]
    ax.bar(xs, ys, width, label=name, color=COLORS[k % len(COLORS)])
  ax.set_xticks(range(len(groups)))
  ax.set_xticklabels(groups, rotation=20, ha="right")
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)


# ---- plots ---------------------------------------------------------------------------------------------

def plot_curves(results: dict) -> str:
  runs = {n: c for n, c in results.get("training", {}).items() if c and (c["train"] or c["val"])}
  if not runs:
    return '<p class="note">No training logs (metrics.jsonl) found beside the systems.</p>'
  fig = _figure(5 * len(runs), 3.4)
  axes = fig.subplots(1, len(runs), squeeze=False)[0]
  for ax, (name, c) in zip(axes, runs.items(), strict=True):
    if c["train"]:
      ax.plot(*zip(*c["train"], strict=True), label="train loss", color=COLORS[0])
    if c["val"]:
      ax.plot(*zip(*c["val"], strict=True), "o-", label="validation loss", color=COLORS[1])
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
  return _img("loss_curves", fig, "training and validation loss per system")


def plot_perplexity(results: dict) -> str:
  systems = list(results["systems"])
  fig = _figure(7, 3.4)
  ax = fig.subplots()
  series = {}
  for key, label in (("heldout", "held-out assistant tokens"), ("prose", "held-out prose (forgetting)")):
    series[label] = [_get(results, f"systems/{s}/perplexity/{key}/ppl") for s in systems]
  _bars(ax, systems, series, "perplexity (lower is better)")
  for container in ax.containers:
    ax.bar_label(container, fmt="%.1f", fontsize=8)
  ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
  return _img("perplexity", fig, "perplexity per system")


def plot_categories(results: dict, set_name: str) -> str:
  systems = list(results["systems"])
  cats = sorted({c for s in systems for c in (_get(results, f"systems/{s}/{set_name}/by_category") or {})})
  if not cats:
    return ""
  fig = _figure(15, 3.6)
  axes = fig.subplots(1, 3)
  for ax, (key, label) in zip(axes, (("chrf_pp", "chrF++"), ("bleu", "BLEU"), ("rouge_l", "ROUGE-L F1 x100")),
                              strict=True):
    series = {s: [_get(results, f"systems/{s}/{set_name}/by_category/{c}/{key}") for c in cats] for s in systems}
    _bars(ax, cats, series, label)
    ax.set_title(label)
  axes[-1].legend(loc="upper left", bbox_to_anchor=(1, 1))
  return _img(f"categories_{set_name}", fig, f"reference metrics per category ({set_name})")


def plot_compliance(results: dict, set_name: str) -> str:
  systems = list(results["systems"])
  keys = (("compliance", "compliant"), ("non_empty", "non-empty"), ("ended_with_eos", "ended with eos"),
          ("fidelity", "mainly expected script"))
  fig = _figure(8, 3.4)
  ax = fig.subplots()
  series = {s: [_get(results, f"systems/{s}/{set_name}/overall/{k}") for k, _ in keys] for s in systems}
  _bars(ax, [label for _, label in keys], series, "% of responses")
  ax.set_ylim(0, 105)
  ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
  return _img(f"compliance_{set_name}", fig, f"format compliance and language fidelity ({set_name})")


def plot_ratings(ratings: dict) -> str:
  systems = list(ratings["systems"])
  criteria = ratings["criteria"]
  fig = _figure(4 * len(criteria), 3.4)
  axes = fig.subplots(1, len(criteria), squeeze=False)[0]
  shades = ("#c44e52", "#f0a35e", "#9fd08c", "#2e8b57")
  for ax, crit in zip(axes, criteria, strict=True):
    bottom = [0.0] * len(systems)
    for score, shade in zip(ratings["scale"], shades, strict=True):
      vals = []
      for s in systems:
        counts = ratings["systems"][s]["all"][crit]["counts"]
        vals.append(100.0 * counts[score] / max(sum(counts), 1))
      ax.bar(systems, vals, bottom=bottom, color=shade, label=str(score))
      bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_title(crit)
    ax.set_ylabel("% of scores")
  axes[-1].legend(title="score", loc="center left", bbox_to_anchor=(1, 0.5))
  return _img("ratings", fig, "distribution of manual scores per system and criterion")


# ---- tables --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (("perplexity/heldout/ppl", "ppl held-out (assistant)"), ("perplexity/prose/ppl", "ppl prose"),
                   ("questions/overall/chrf_pp", "chrF++"), ("questions/overall/bleu", "BLEU"),
                   ("questions/overall/rouge_l", "ROUGE-L"), ("questions/overall/compliance", "compliance %"),
                   ("questions/overall/fidelity", "fidelity %"), ("questions/overall/repetition", "repetition"),
                   ("heldout/overall/chrf_pp", "held-out chrF++"), ("heldout/overall/compliance",
                                                                     "held-out compliance %"))


def summary_table(results: dict) -> str:
  head = "".join(f"<th>{html.escape(label)}</th>" for _, label in SUMMARY_COLUMNS)
  body = []
  for s in results["systems"]:
    cells = "".join(_num(results, f"systems/{s}/{path}") for path, _ in SUMMARY_COLUMNS)
    body.append(f"<tr><th>{html.escape(s)}</th>{cells}</tr>")
  return f'<table id="summary"><tr><th>system</th>{head}</tr>{"".join(body)}</table>'


def headline(results: dict) -> str:
  base = results.get("baseline")
  if base not in results["systems"]:
    return ""
  lines = []
  b = results["systems"][base]
  for s, r in results["systems"].items():
    if s == base:
      continue
    for key, what in (("heldout", "assistant-token perplexity"), ("prose", "prose perplexity")):
      pb, ps = _get(b, f"perplexity/{key}/ppl"), _get(r, f"perplexity/{key}/ppl")
      if pb and ps:
        lines.append(f"{html.escape(s)}: {what} {fmt(ps)} vs {html.escape(base)} {fmt(pb)} "
                     f"({100 * (ps - pb) / pb:+.0f}%)")
    cb, cs = _get(b, "questions/overall/compliance"), _get(r, "questions/overall/compliance")
    if cb is not None and cs is not None:
      lines.append(f"{html.escape(s)}: format compliance {fmt(cs)}% vs {html.escape(base)} {fmt(cb)}%")
  return "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def coverage_note(results: dict) -> str:
  """What the perplexities count: tokens, and records the loader could not use (same for every system)."""
  first = next(iter(results["systems"].values()), {})
  notes = []
  for key, what, unit in (("heldout", "held-out assistant-token perplexity", "conversations"),
                          ("prose", "prose perplexity", "documents")):
    p = _get(first, f"perplexity/{key}")
    if not p:
      continue
    rejected = sum((p.get("rejected") or {}).values())
    line = f"{what}: {p['tokens']} tokens from {p.get('records', 0) - rejected} of {p.get('records', 0)} {unit}"
    if rejected:
      line += f" ({rejected} not usable: {html.escape(json.dumps(p['rejected']))})"
    if p.get("truncated"):
      line += f"; {p['truncated']} shortened (oldest turns dropped)"
    notes.append(line)
  return '<p class="note">' + "<br>".join(notes) + "</p>" if notes else ""


def category_table(results: dict, set_name: str) -> str:
  cols = (("n", "n"), ("n_ref", "with ref."), ("chrf_pp", "chrF++"), ("bleu", "BLEU"), ("rouge_l", "ROUGE-L"),
          ("compliance", "compliance %"), ("fidelity", "fidelity %"), ("repetition", "repetition"))
  head = "".join(f"<th>{label}</th>" for _, label in cols)
  body = []
  for s in results["systems"]:
    cats = _get(results, f"systems/{s}/{set_name}/by_category") or {}
    for c in cats:
      cells = "".join(_num(results, f"systems/{s}/{set_name}/by_category/{c}/{k}") for k, _ in cols)
      body.append(f"<tr><th>{html.escape(s)}</th><td>{html.escape(c)}</td>{cells}</tr>")
  return f'<table><tr><th>system</th><th>category</th>{head}</tr>{"".join(body)}</table>'


def ratings_section(results: dict) -> str:
  ratings = results.get("ratings")
  kit = results.get("rating_kit") or {}
  where = (f'<p class="note">Blind sheets: {html.escape(", ".join(kit.get("sheets", [])))}; key (keep apart): '
           f'{html.escape(str(kit.get("key", "")))}. Import filled sheets with '
           "<code>--config.rating.sheets='(\"a.csv\",\"b.csv\")' --config.mode=report</code>.</p>") if kit else ""
  if not ratings:
    return where + '<p class="note">No filled rating sheets imported yet.</p>'
  crits = [*ratings["criteria"], "overall"]
  rows = []
  for s, cats in ratings["systems"].items():
    for c in cats:
      cells = "".join(_num(results, f"ratings/systems/{s}/{c}/{k}/mean") for k in crits)
      rows.append(f"<tr><th>{html.escape(s)}</th><td>{html.escape(c)}</td>"
                  f'{_num(results, f"ratings/systems/{s}/{c}/overall/n")}{cells}</tr>')
  ag = ratings["agreement"]
  if "note" in ag:
    agree = f'<p class="note">Inter-rater agreement: {html.escape(ag["note"])}.</p>'
  else:
    cells = "".join(f"<th>{k}</th>" for k in [*ratings["criteria"], "all"])
    vals = "".join(_num(results, f"ratings/agreement/{k}") for k in [*ratings["criteria"], "all"])
    agree = (f"<p>Inter-rater agreement, Krippendorff's alpha (ordinal), {len(ag['raters'])} raters over "
             f"{ag['items']} items:</p><table><tr>{cells}</tr><tr>{vals}</tr></table>")
  head = "".join(f"<th>{k}</th>" for k in crits)
  table = f"<table><tr><th>system</th><th>category</th><th>scores</th>{head}</tr>{''.join(rows)}</table>"
  return where + plot_ratings(ratings) + "<p>Mean score (0-3):</p>" + table + agree


def answers_table(results: dict, rows: Sequence[dict], samples: int) -> str:
  systems = list(results["systems"])
  by = {(r["system"], r["id"]): r for r in rows if r["set"] == "questions"}
  order = [r for r in rows if r["set"] == "questions" and r["system"] == systems[0]]
  cats: dict = {}
  for r in order:
    cats.setdefault(r["category"], []).append(r)
  picked = []
  while len(picked) < min(samples, len(order)):
    for c in list(cats):
      if cats[c] and len(picked) < samples:
        picked.append(cats[c].pop(0))
  head = "".join(f"<th>{html.escape(s)}</th>" for s in systems)
  body = []
  for p in picked:
    ref = f'<div class="note">reference: {html.escape(p["reference"])}</div>' if p["reference"] else ""
    cells = []
    for s in systems:
      r = by.get((s, p["id"]))
      if r is None:
        cells.append("<td>–</td>")
        continue
      ok = r["checks"]["compliant"]
      badges = (f'<span class="badge {"ok" if ok else "bad"}">{"compliant" if ok else "not compliant"}</span>'
                f'<span class="badge">{html.escape(r["finish_reason"])}, {r["new_tokens"]} tokens</span>')
      if r["checks"]["invented_turn"]:
        badges += f'<span class="badge bad">invented {html.escape(r["checks"]["invented_turn"])}</span>'
      if not r["checks"]["faithful"]:
        badges += '<span class="badge bad">wrong script</span>'
      text = r["text"] or (r.get("error") or "(empty)")
      cells.append(f'<td>{badges}<div class="box">{html.escape(text)}</div></td>')
    body.append(f'<tr><td>{html.escape(p["id"])}<br>{html.escape(p["category"])}</td>'
                f'<td><div class="box">{html.escape(p["prompt"])}</div>{ref}</td>{"".join(cells)}</tr>')
  return (f'<table class="answers"><tr><th>question</th><th>prompt</th>{head}</tr>{"".join(body)}</table>'
          f'<p class="note">All answers: {html.escape(str(results.get("files", {}).get("answers", "answers.jsonl")))}'
          "</p>")


def benchmarks_section(results: dict) -> str:
  from telugu_jax.evaluate.tasks.section import tasks_section  # imports report's helpers

  return tasks_section(results)


def render(results: dict, rows: Sequence[dict], *, samples: int = 12) -> str:
  systems = "".join(f"<li><b>{html.escape(s)}</b> ({html.escape(r['kind'])}): {html.escape(r['path'])}</li>"
                    for s, r in results["systems"].items())
  sets = ", ".join(f"{html.escape(k)}: {v['n']} prompts" for k, v in results.get("sets", {}).items())
  warnings = "".join(f'<p class="warn">warning: {html.escape(w)}</p>' for w in results.get("warnings", []))
  g = results.get("config", {}).get("generation", {})
  parts = [
      "<!DOCTYPE html>", '<html lang="te"><head><meta charset="utf-8"><title>telugu-jax evaluation</title>',
      f"<style>{webfont.embedded_css()}{CSS}</style></head><body>",
      f"<h1>Evaluation report</h1><p class='note'>{html.escape(results.get('created', ''))}; answer sets: {sets}; "
      f"generation: max_new_tokens {g.get('max_new_tokens')}, temperature {g.get('temperature')}.</p>",
      f"<ul>{systems}</ul>", warnings,
      "<h2>Summary</h2>", headline(results), summary_table(results), coverage_note(results),
      '<p class="note">Perplexity: on the held-out conversations\' assistant tokens and on held-out prose, same '
      "tokens for every system. chrF++/BLEU (sacrebleu, corpus level) and ROUGE-L (F1 x100, Telugu-keeping "
      "tokens) on answers that have a reference. Compliance: non-empty, ended with eos within the budget, no "
      "invented turn. Fidelity: mainly in the expected script. Repetition: share of repeated word 3-grams.</p>",
      "<h2>Training curves</h2>", plot_curves(results),
      "<h2>Perplexity</h2>", plot_perplexity(results),
      "<h2>Metrics per category: 100-question set</h2>", plot_categories(results, "questions"),
      category_table(results, "questions"),
      "<h2>Compliance and language fidelity</h2>", plot_compliance(results, "questions"),
  ]
  if any("heldout" in r for r in results["systems"].values()):
    parts += ["<h2>Held-out conversations</h2>", plot_categories(results, "heldout"),
              plot_compliance(results, "heldout"), category_table(results, "heldout")]
  parts += ["<h2>Public Telugu benchmarks</h2>", benchmarks_section(results)]
  parts += ["<h2>Manual ratings</h2>", ratings_section(results),
            "<h2>Sample answers</h2>", answers_table(results, rows, samples), "</body></html>"]
  return "\n".join(parts)

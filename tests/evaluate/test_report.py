"""The evaluation end to end on the suite's shared smoke run: results.json checked against independent
recomputations, a rating round trip through the report mode, and the HTML opened in headless Chromium
(plots decoded with non-zero size, every number shown equal to the JSON, Telugu drawn in the embedded font)."""

import csv
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
import sacrebleu

from telugu_jax.config import load_config
from telugu_jax.evaluate import rating
from telugu_jax.evaluate.report import fmt
from telugu_jax.evaluate.run import run
from telugu_jax.evaluate.settings import EvalSettings
from telugu_jax.evaluate.tasks.bpb import read_documents

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def eval_config(smoke_run, out):
  c = load_config("eval")
  w = smoke_run["workdir"]
  with c.unlocked():
    c.systems = {"base": os.path.join(w, "base"), "sft-lora": os.path.join(w, "sft")}
  c.data.heldout = os.path.join(w, "data", "val.jsonl")
  c.data.prose = os.path.join(w, "text", "val.txt")
  c.output = str(out)
  c.questions.per_category = 1
  c.heldout_answers.limit = 4
  c.generation.max_new_tokens = 16
  c.generation.batch_size = 8
  c.report.samples = 6
  # benchmark tasks on files written here (bpb on the smoke run's held-out text); tydiqa's file is missing
  mgsm = os.path.join(str(out), "mgsm_te.tsv")
  with open(mgsm, "w", encoding="utf-8") as f:
    f.write("సీత దగ్గర 3 పళ్ళు ఉన్నాయి. ఇంకో 4 కొంది. మొత్తం ఎన్ని?\t7\nఒక పెట్టెలో 2 పెన్నులు. 5 పెట్టెలలో ఎన్ని?\t10\n")
  sib = os.path.join(str(out), "sib200_tel_Telu_test.tsv")
  with open(sib, "w", encoding="utf-8") as f:
    f.write("index_id\tcategory\ttext\n1\tsports\tపిల్లలు క్రికెట్ ఆడతారు.\n2\thealth\tరోజూ నీళ్ళు తాగండి.\n")
  c.tasks.bpb.update(path=os.path.join(w, "text", "val.txt"), limit=3)
  c.tasks.mgsm.update(path=mgsm, max_new_tokens=8)
  c.tasks.sib200.update(path=sib, train="")
  c.tasks.tydiqa.path = os.path.join(str(out), "missing.json")
  c.tasks.translation.update(en="", te="")
  return c


def _fill_sheets(kit, out):
  """Two raters: alice gives sft-lora 2 and base 1 everywhere; bob the same except fluency 3 for sft-lora."""
  key = rating.read_key(kit["key"])
  with open(kit["sheets"][0], encoding="utf-8-sig", newline="") as f:
    rows = list(csv.DictReader(f))
  paths = []
  for rater in ("alice", "bob"):
    for r in rows:
      system = key[r["item"]]["system"]
      for c in rating.CRITERIA:
        r[c] = "2" if system == "sft-lora" else "1"
        if rater == "bob" and system == "sft-lora" and c == "fluency":
          r[c] = "3"
    paths.append(os.path.join(out, f"{rater}.csv"))
    with open(paths[-1], "w", encoding="utf-8-sig", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(rating.SHEET_COLUMNS))
      w.writeheader()
      w.writerows(rows)
  return paths


@pytest.fixture(scope="module")
def evaluated(smoke_run, tmp_path_factory):
  out = tmp_path_factory.mktemp("eval")
  config = eval_config(smoke_run, out)
  full = run(EvalSettings.from_config(config))
  with open(out / "results.json", encoding="utf-8") as f:
    full_json = json.load(f)
  sheets = _fill_sheets(full["rating_kit"], str(out))
  config.mode = "report"
  config.rating.sheets = tuple(sheets)
  rated = run(EvalSettings.from_config(config))
  with open(out / "answers.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return {"out": out, "full": full_json, "rated": rated, "rows": rows, "config": config}


def test_perplexity_and_compliance_against_independent_recomputation(evaluated, smoke_run):
  res = evaluated["full"]
  base, sft = res["systems"]["base"], res["systems"]["sft-lora"]
  # The demo computed the same held-out perplexities on its own (same loader settings): they must agree.
  assert sft["perplexity"]["heldout"]["ppl"] == pytest.approx(smoke_run["sft_ppl"]["ppl"], rel=1e-5)
  assert base["perplexity"]["heldout"]["ppl"] == pytest.approx(smoke_run["base_ppl"]["ppl"], rel=1e-5)
  assert base["perplexity"]["heldout"]["tokens"] == sft["perplexity"]["heldout"]["tokens"] > 0
  assert base["perplexity"]["prose"]["tokens"] == sft["perplexity"]["prose"]["tokens"] > 0
  assert sft["perplexity"]["heldout"]["ppl"] < base["perplexity"]["heldout"]["ppl"]
  for system in ("base", "sft-lora"):
    for set_name, n in (("questions", 6), ("heldout", 4)):
      rows = [r for r in evaluated["rows"] if r["system"] == system and r["set"] == set_name]
      assert len(rows) == n
      # compliance recomputed from the raw rows: non-empty, eos, no "user:" written by the model
      ok = [r["text"].strip() != "" and r["finish_reason"] == "eos" and not re.search(r"(^|\s)user:", r["raw_text"],
                                                                                        re.I)
            and not re.search(r"(^|\s)assistant:", r["raw_text"], re.I) for r in rows]
      assert res["systems"][system][set_name]["overall"]["compliance"] == pytest.approx(100 * sum(ok) / n)
      for r in rows:
        if r["finish_reason"] == "stop":
          assert r["checks"]["invented_turn"] == "user:" and "user:" in r["raw_text"] and "user:" not in r["text"]
        if r["finish_reason"] == "error":
          assert "exceeds the model's context" in r["error"] and not r["checks"]["compliant"]
      with_ref = [r for r in rows if r["reference"]]
      chrf = sacrebleu.corpus_chrf([r["text"] for r in with_ref], [[r["reference"] for r in with_ref]], word_order=2)
      assert res["systems"][system][set_name]["overall"]["chrf_pp"] == pytest.approx(chrf.score)


def test_benchmark_tasks_in_results_json(evaluated):
  res = evaluated["full"]
  assert res["skipped_tasks"] == {"tydiqa": f"{evaluated['out'] / 'missing.json'} not found",
                                  "translation": "off (no path given)"}
  for system in ("base", "sft-lora"):
    t = res["systems"][system]["tasks"]
    assert set(t) == {"bpb", "mgsm", "sib200"}
    docs = read_documents(evaluated["config"].tasks.bpb.path)
    assert t["bpb"]["n"] == min(3, len(docs)) and t["bpb"]["chars"] == sum(len(d) for d in docs[:3])
    assert t["bpb"]["bits_per_byte"] > 0 and t["bpb"]["bytes"] > 2 * t["bpb"]["chars"]  # Telugu: 3 bytes a letter
    assert t["mgsm"]["n"] == 2 and t["sib200"]["n"] == 2 and t["sib200"]["chance"] == pytest.approx(100 / 7)
    rows = [r for r in evaluated["rows"] if r["system"] == system and r["set"] == "task/mgsm"]
    assert 100 * sum(r["correct"] for r in rows) / 2 == t["mgsm"]["accuracy"]


def test_rating_round_trip_through_report_mode(evaluated):
  ratings = evaluated["rated"]["ratings"]
  sft, base = ratings["systems"]["sft-lora"]["all"], ratings["systems"]["base"]["all"]
  assert sft["relevance"]["mean"] == 2.0 and base["relevance"]["mean"] == 1.0
  assert sft["fluency"]["mean"] == 2.5 and sft["fluency"]["counts"] == [0, 0, 6, 6]  # 6 questions x 2 raters
  assert ratings["agreement"]["relevance"] == pytest.approx(1.0)      # identical scores
  assert ratings["agreement"]["fluency"] < 1.0
  # the report mode keeps the full run's numbers and the same (reused) sheets
  assert evaluated["rated"]["systems"] == evaluated["full"]["systems"]
  assert evaluated["full"]["rating_kit"]["reused"] is False


def test_cli_rejects_a_bad_sheet_with_row_and_column(evaluated, tmp_path):
  bad = tmp_path / "carol.csv"
  with open(evaluated["out"] / "alice.csv", encoding="utf-8-sig", newline="") as f:
    rows = list(csv.reader(f))
  rows[3][rows[0].index("fluency")] = "4"  # the 3rd item: spreadsheet row 4
  with open(bad, "w", encoding="utf-8", newline="") as f:
    csv.writer(f).writerows(rows)
  proc = subprocess.run([sys.executable, "-m", "telugu_jax.evaluate", "--config", os.path.join(REPO, "configs/eval.py"),
                         f"--config.output={evaluated['out']}", "--config.mode=report",
                         f"--config.rating.sheets=('{bad}',)"], capture_output=True, text=True, cwd=REPO,
                        timeout=120)
  assert proc.returncode != 0
  assert "row 4, column 'fluency' (H): '4' is not a score" in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


class _Dom(HTMLParser):
  def __init__(self):
    super().__init__()
    self.images, self.numbers, self._path, self._text = [], [], None, ""

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "img":
      self.images.append(a)
    if "data-path" in a:
      self._path, self._text = a["data-path"], ""

  def handle_data(self, data):
    if self._path is not None:
      self._text += data

  def handle_endtag(self, tag):
    if self._path is not None and tag == "td":
      self.numbers.append((self._path, self._text))
      self._path = None


PROBE = """<script>window.addEventListener('load', () => {
  for (const img of document.images) {
    const box = img.getBoundingClientRect();
    img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight);
    img.setAttribute('data-rendered', Math.round(box.width) + 'x' + Math.round(box.height));
    img.setAttribute('data-complete', String(img.complete));
  }
  document.body.setAttribute('data-probed', '1');
});</script></body>"""


def _lookup(tree, path):
  for k in path.split("/"):
    tree = tree[k] if isinstance(tree, dict) and k in tree else None
  return tree


def test_report_renders_in_headless_chromium(evaluated, chromium, tmp_path):
  html_text = (evaluated["out"] / "report.html").read_text(encoding="utf-8")
  assert "<script" not in html_text and "http://" not in html_text and "https://" not in html_text  # self-contained
  probed = tmp_path / "probed.html"
  probed.write_text(html_text.replace("</body>", PROBE), encoding="utf-8")
  proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,2000",
                         "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                        capture_output=True, text=True, timeout=120)
  assert 'data-probed="1"' in proc.stdout, proc.stderr[-2000:]
  dom = _Dom()
  dom.feed(proc.stdout)
  plots = {img["data-plot"]: img for img in dom.images}
  assert {"loss_curves", "perplexity", "categories_questions", "compliance_questions", "categories_heldout",
          "compliance_heldout", "ratings", "tasks"} <= set(plots)
  for name, img in plots.items():
    w, h = map(int, img["data-natural"].split("x"))
    rw, rh = map(int, img["data-rendered"].split("x"))
    assert img["data-complete"] == "true" and w > 100 and h > 100 and rw > 100 and rh > 50, (name, img)
  with open(evaluated["out"] / "results.json", encoding="utf-8") as f:
    results = json.load(f)
  assert len(dom.numbers) > 100
  for path, text in dom.numbers:
    value = _lookup(results, path)
    assert text == fmt(value), (path, text, value)
    if isinstance(value, float):
      assert float(text) == pytest.approx(value, abs=0.006)
  shown = {p for p, _ in dom.numbers}
  for key in ("systems/base/tasks/bpb/bits_per_byte", "systems/sft-lora/tasks/mgsm/accuracy",
              "systems/sft-lora/tasks/sib200/accuracy", "systems/base/perplexity/heldout/ppl",
              "systems/sft-lora/perplexity/heldout/ppl",
              "systems/sft-lora/questions/overall/compliance", "systems/base/questions/overall/fidelity",
              "ratings/agreement/all"):
    assert key in shown


def test_report_carries_its_telugu_font(evaluated, tmp_path):
  """report.html embeds the Telugu font (data: URLs), and Chromium draws its Telugu in it: on a machine with no
  Telugu font anything else is tofu. The control: the same file with the font data broken shows tofu."""
  from tests import browser as browser_lib

  report = evaluated["out"] / "report.html"
  html_text = report.read_text(encoding="utf-8")
  assert html_text.count("@font-face") == 2 and html_text.count("data:font/woff2;base64,") == 2
  driver = browser_lib.start_driver(tmp_path / "profile", window="1300,1000")
  try:
    driver.get(report.as_uri())
    browser_lib.assert_renders_telugu(browser_lib.font_probe(driver))
    driver.execute_script("document.querySelector('table.answers').scrollIntoView()")
    browser_lib.screenshot(driver, "report.png", tmp_path)
    if browser_lib.system_telugu_fonts() == []:
      broken = tmp_path / "report-font-broken.html"
      broken.write_text(re.sub(r"data:font/woff2;base64,[A-Za-z0-9+/=]+", "data:font/woff2;base64,AAAA", html_text),
                        encoding="utf-8")
      driver.get(broken.as_uri())
      browser_lib.assert_tofu(browser_lib.font_probe(driver))
  finally:
    driver.quit()


def test_plots_draw_telugu_names_as_numbers_named_in_html():
  """matplotlib has no Telugu glyphs (it warns "Glyph ... missing") and does not shape conjuncts: a Telugu
  system or category name is drawn as [n], and the HTML beside the plot names it."""
  import warnings

  from telugu_jax.evaluate import report

  cats = {"వాస్తవాలు": {"chrf_pp": 30.0, "bleu": 5.0, "rouge_l": 20.0},
          "facts": {"chrf_pp": 40.0, "bleu": 9.0, "rouge_l": 25.0}}
  results = {"systems": {"బేస్ మోడల్": {"questions": {"by_category": cats}},
                         "sft": {"questions": {"by_category": cats}}}}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = report.plot_categories(results, "questions")
  assert 'data-plot="categories_questions"' in out
  assert out.endswith('<p class="note plot-key">[1] వాస్తవాలు; [2] బేస్ మోడల్</p>'), out[-300:]
  latin = {"systems": {"sft": {"questions": {"by_category": {"facts": cats["facts"]}}}}}
  assert "plot-key" not in report.plot_categories(latin, "questions")

"""The chat page and the rating page in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium). When /usr/bin/chromium is missing the browser is installed here with apt-get (as root), so
`make test` needs no manual step; where that is impossible the tests skip and say why. No browser is ever
downloaded by Selenium itself: both binaries are given by path."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess

import httpx
import pytest

from telugu_jax.serve.app import create_app
from telugu_jax.serve.engine import Engine
from telugu_jax.serve.ratings import RatingStore

from .conftest import LiveServer
from .test_ratings import write_sheet

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
APT_PACKAGES = ("chromium", "chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900")


def ensure_chromium() -> None:
  """Install Debian's Chromium and its driver when missing; skip with the reason when that cannot be done."""
  if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
    return
  how = f"apt-get install {' '.join(APT_PACKAGES)}"
  if shutil.which("apt-get") is None or os.geteuid() != 0:
    pytest.skip(f"headless Chromium is missing and this test cannot install it (needs root and apt-get): run `{how}`")
  env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
  for cmd in (["apt-get", "update", "-qq"],
              ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]):
    try:
      done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
      pytest.skip(f"`{' '.join(cmd)}` timed out: install the browser with `{how}`")
    if done.returncode != 0:
      pytest.skip(f"could not install Chromium (`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}): run `{how}`")
  if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(f"{how} ran but {CHROMIUM} or {CHROMEDRIVER} is still missing")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra lists it)")
  from selenium.webdriver.chrome.service import Service

  ensure_chromium()
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in FLAGS:
    options.add_argument(flag)
  options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
  driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
  driver.set_page_load_timeout(60)
  yield driver
  driver.quit()


def wait(driver, condition, timeout=60):
  from selenium.webdriver.support.ui import WebDriverWait

  return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def js(driver, script, *args):
  return driver.execute_script(script, *args)


def test_chat_page_streams_a_telugu_conversation(browser, tiny_models):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys

  with LiveServer(create_app(Engine(tiny_models))) as url:
    browser.get(url + "/")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#model option').length") == 1)
    assert js(browser, "return document.getElementById('source').textContent").endswith(
        str(tiny_models["tiny"].source))
    for field, value in (("temperature", "0"), ("max-tokens", "48")):
      el = browser.find_element(By.ID, field)
      el.clear()
      el.send_keys(value)
    # Count how often the answer's text changes while it arrives: a streamed answer changes many times.
    js(browser, """window.updates = 0;
      new MutationObserver((ms) => { for (const m of ms) if (m.target.classList &&
        m.target.classList.contains('content')) window.updates++; })
        .observe(document.getElementById('messages'), {subtree: true, childList: true});""")
    history = []
    for n, message in enumerate(["నమస్కారం! మీరు ఎలా ఉన్నారు?", "తెలుగు భాష గురించి చెప్పండి."], start=1):
      box = browser.find_element(By.ID, "message")
      box.send_keys(message)
      box.send_keys(Keys.ENTER)
      wait(browser, lambda d, n=n: js(d, "return document.querySelectorAll('.assistant-msg[data-done=true]').length")
           == n)
      shown = js(browser, "const a = document.querySelectorAll('.assistant-msg .content'); "
                          "return a[a.length - 1].textContent")
      users = js(browser, "return [...document.querySelectorAll('.user-msg')].map((e) => e.textContent)")
      assert users[-1] == message
      history.append({"role": "user", "content": message})
      # The same conversation through the API, not streamed: the page must show exactly this answer.
      api = httpx.post(url + "/v1/chat/completions", timeout=60, json={
          "model": "tiny", "messages": history, "temperature": 0, "max_tokens": 48}).json()
      expected = api["choices"][0]["message"]["content"]
      assert shown == expected and expected
      history.append({"role": "assistant", "content": expected})
    assert js(browser, "return window.updates") >= 4, "the answers did not arrive in pieces"
    browser.find_element(By.ID, "reset").click()
    assert js(browser, "return document.getElementById('messages').children.length") == 0


def test_rate_page_scores_persist_across_reload_and_export(browser, tiny_models, tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys

  sheet = write_sheet(tmp_path / "sheet.csv")
  store = RatingStore(str(tmp_path / "ratings.sqlite"), sheet)
  rater = "సీత"

  def selector(q, r, c, s):
    return f'.score[data-q="{q}"][data-r="{r}"][data-c="{c}"][data-s="{s}"]'

  def is_selected(q, r, c, s):  # asked in the page: a click re-renders the buttons, so no element is kept
    return js(browser, "const b = document.querySelector(arguments[0]); return !!b && "
                       "b.classList.contains('selected')", selector(q, r, c, s))

  def click(q, r, c, s, selected=True):
    browser.find_element(By.CSS_SELECTOR, selector(q, r, c, s)).click()
    wait(browser, lambda d: is_selected(q, r, c, s) == selected)

  def ready():
    wait(browser, lambda d: js(d, "return document.body.dataset.rater") == rater)

  with LiveServer(create_app(Engine(tiny_models), ratings=store)) as url:
    browser.get(url + "/rate")
    wait(browser, lambda d: js(d, "return document.body.dataset.ready") == "true")
    name = browser.find_element(By.ID, "rater")
    name.send_keys(rater)
    name.send_keys(Keys.TAB)
    ready()
    assert js(browser, "return document.getElementById('question').textContent") == "భారతదేశ రాజధాని ఏది?"
    texts = js(browser, "return [...document.querySelectorAll('.response .text')].map((e) => e.textContent)")
    assert len(texts) == 3 and "న్యూఢిల్లీ" in texts[0]
    click("q001", "A", "relevance", 3)
    click("q001", "A", "fluency", 2)
    click("q001", "B", "factuality", 0)
    click("q001", "C", "completeness", 1)
    click("q001", "C", "completeness", 1, selected=False)  # a second click clears
    browser.find_element(By.ID, "next").click()
    wait(browser, lambda d: js(d, "return document.getElementById('question').textContent").startswith("వర్షం"))
    click("q002", "B", "fluency", 1)

    browser.refresh()  # nothing lives only in the page: the scores come back from SQLite
    ready()
    assert js(browser, "return document.getElementById('question').textContent").startswith("వర్షం")
    assert is_selected("q002", "B", "fluency", 1)
    browser.find_element(By.ID, "prev").click()
    selected = js(browser, "return [...document.querySelectorAll('.score.selected')].map((b) => "
                           "[b.dataset.q, b.dataset.r, b.dataset.c, b.dataset.s].join(' '))")
    assert sorted(selected) == ["q001 A fluency 2", "q001 A relevance 3", "q001 B factuality 0"]
    assert js(browser, "return document.getElementById('progress-text').textContent") == "0 / 2 complete"

    href = browser.find_element(By.ID, "export").get_attribute("href")
    exported = list(csv.DictReader(io.StringIO(httpx.get(href).text)))
  clicked = {("q001", "A", "relevance"): "3", ("q001", "A", "fluency"): "2", ("q001", "B", "factuality"): "0",
             ("q002", "B", "fluency"): "1"}
  assert len(exported) == 6
  for row in exported:
    for c in ("relevance", "fluency", "completeness", "factuality"):
      assert row[c] == clicked.get((row["question_id"], row["response_id"], c), ""), (row, c)

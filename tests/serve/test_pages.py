"""The chat page and the rating page in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium). When /usr/bin/chromium is missing the browser is installed here with apt-get (as root), so
`make test` needs no manual step; where that is impossible the tests skip and say why. No browser is ever
downloaded by Selenium itself: both binaries are given by path. Both pages must draw Telugu in the font the
server ships, not as tofu (tests/browser.py `assert_renders_telugu`); their screenshots go to
$TELUGU_JAX_SCREENSHOTS (docs/screenshots/ for the README)."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from telugu_jax.serve.app import create_app
from telugu_jax.serve.engine import Engine
from telugu_jax.serve.ratings import RatingStore
from tests import browser as browser_lib

from .conftest import LiveServer
from .test_ratings import ANSWERS, kit_sheet

CHAT_MESSAGE = "నమస్కారం! తెలుగు భాష గురించి చెప్పండి."


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  driver = browser_lib.start_driver(tmp_path_factory.mktemp("chromium-profile"))
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
    for field, value in (("temperature", "0"), ("max-tokens", "96")):
      el = browser.find_element(By.ID, field)
      el.clear()
      el.send_keys(value)
    # Count how often the answer's text changes while it arrives: a streamed answer changes several times.
    js(browser, """window.updates = 0;
      new MutationObserver((ms) => { for (const m of ms) if (m.target.classList &&
        m.target.classList.contains('content')) window.updates++; })
        .observe(document.getElementById('messages'), {subtree: true, childList: true});""")
    history = []
    for n, message in enumerate(["నమస్కారం! మీరు ఎలా ఉన్నారు?", "తెలుగు భాష గురించి చెప్పండి."], start=1):
      js(browser, "window.updates = 0")
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
          "model": "tiny", "messages": history, "temperature": 0, "max_tokens": 96}).json()
      expected = api["choices"][0]["message"]["content"]
      assert shown == expected and expected
      assert js(browser, "return window.updates") >= 2, "the answer did not arrive in pieces"
      history.append({"role": "assistant", "content": expected})
    browser.find_element(By.ID, "reset").click()
    assert js(browser, "return document.getElementById('messages').children.length") == 0


def test_rate_page_scores_persist_across_reload_and_export(browser, tiny_models, tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys

  from telugu_jax.evaluate.rating import import_sheet, read_key

  sheet, key_path = kit_sheet(tmp_path / "kit")
  store = RatingStore(str(tmp_path / "ratings.sqlite"), sheet)
  rater = "సీత"

  def selector(item, c, s):
    return f'.score[data-item="{item}"][data-c="{c}"][data-s="{s}"]'

  def is_selected(item, c, s):  # asked in the page: a click re-renders the buttons, so no element is kept
    return js(browser, "const b = document.querySelector(arguments[0]); return !!b && "
                       "b.classList.contains('selected')", selector(item, c, s))

  def click(item, c, s, selected=True):
    browser.find_element(By.CSS_SELECTOR, selector(item, c, s)).click()
    wait(browser, lambda d: is_selected(item, c, s) == selected)

  def question():
    return js(browser, "return document.getElementById('question').textContent")

  with LiveServer(create_app(Engine(tiny_models), ratings=store)) as url:
    browser.get(url + "/rate")
    wait(browser, lambda d: js(d, "return document.body.dataset.ready") == "true")
    name = browser.find_element(By.ID, "rater")
    name.send_keys(rater)
    name.send_keys(Keys.TAB)
    wait(browser, lambda d: js(d, "return document.body.dataset.rater") == rater)
    assert question() == "భారతదేశ రాజధాని ఏది?"
    texts = js(browser, "return [...document.querySelectorAll('.response .text')].map((e) => e.textContent)")
    assert sorted(texts) == sorted(a["q001"] for a in ANSWERS.values())  # all three, blind
    assert not any(system in browser.page_source for system in ANSWERS)
    # Score every cell of q001 (one click changed, one cleared and given again), then part of q002.
    clicks = {}
    for n, item in enumerate(("q001-A", "q001-B", "q001-C")):
      for m, c in enumerate(("relevance", "fluency", "completeness", "factuality")):
        clicks[item, c] = (n + 2 * m) % 4
        click(item, c, clicks[item, c])
    click("q001-B", "fluency", clicks["q001-B", "fluency"], selected=False)  # a second click clears
    clicks["q001-B", "fluency"] = 3
    click("q001-B", "fluency", 3)
    comment = browser.find_element(By.CSS_SELECTOR, 'textarea.comment[data-item="q001-C"]')
    comment.send_keys("సరైన జవాబు, కానీ పొడవుగా ఉంది")
    comment.send_keys(Keys.TAB)
    wait(browser, lambda d: js(d, "return document.getElementById('status').textContent") == "comment saved")
    browser.find_element(By.ID, "next").click()
    wait(browser, lambda d: question().startswith("వర్షం"))
    click("q002-B", "fluency", 1)
    clicks["q002-B", "fluency"] = 1

    browser.refresh()  # nothing lives only in the page: the scores come back from SQLite
    wait(browser, lambda d: js(d, "return document.body.dataset.rater") == rater)
    assert question().startswith("వర్షం")  # where the rater was
    assert is_selected("q002-B", "fluency", 1)
    assert js(browser, "return document.getElementById('progress-text').textContent") == "1 / 2 complete"
    browser.find_element(By.ID, "prev").click()
    selected = js(browser, "return [...document.querySelectorAll('.score.selected')].map((b) => "
                           "[b.dataset.item, b.dataset.c, b.dataset.s].join(' '))")
    assert sorted(selected) == sorted(f"{i} {c} {s}" for (i, c), s in clicks.items() if i.startswith("q001"))
    assert js(browser, "return document.querySelector('textarea.comment[data-item=\"q001-C\"]').value") == \
        "సరైన జవాబు, కానీ పొడవుగా ఉంది"
    href = browser.find_element(By.ID, "export").get_attribute("href")
    exported = httpx.get(href).text
  rows = {r["item"]: r for r in csv.DictReader(io.StringIO(exported.removeprefix("\ufeff")))}
  assert len(rows) == 6
  for item, row in rows.items():
    for c in ("relevance", "fluency", "completeness", "factuality"):
      assert row[c] == str(clicks.get((item, c), "")), (item, c)
  # q001 is complete: the kit imports those rows (its key un-blinds them) with the scores clicked.
  path = tmp_path / f"{rater}.csv"
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows["q001-A"]))
    writer.writeheader()
    writer.writerows(r for item, r in rows.items() if item.startswith("q001"))
  key = {k: v for k, v in read_key(key_path).items() if v["question_id"] == "q001"}
  ratings = import_sheet(str(path), key)
  assert {r.item: dict(r.scores) for r in ratings} == {
      i: {c: clicks[i, c] for c in ("relevance", "fluency", "completeness", "factuality")}
      for i in ("q001-A", "q001-B", "q001-C")}
  assert [r.comment for r in ratings if r.item == "q001-C"] == ["సరైన జవాబు, కానీ పొడవుగా ఉంది"]


def test_pages_carry_their_telugu_font(browser, tiny_models, tmp_path):
  """/ and /rate draw Telugu in the font the server ships (telugu_jax.webfont), not in whatever the machine
  has: on a machine with no Telugu font (the test machines) anything else is tofu (`assert_renders_telugu`)."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys

  sheet, _ = kit_sheet(tmp_path / "kit")
  store = RatingStore(str(tmp_path / "ratings.sqlite"), sheet)
  with LiveServer(create_app(Engine(tiny_models), ratings=store)) as url:
    browser.get(url + "/")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#model option').length") == 1)
    for field, value in (("temperature", "0"), ("max-tokens", "40")):
      el = browser.find_element(By.ID, field)
      el.clear()
      el.send_keys(value)
    box = browser.find_element(By.ID, "message")
    box.send_keys(CHAT_MESSAGE)
    box.send_keys(Keys.ENTER)
    wait(browser, lambda d: js(d, "return document.querySelectorAll('.assistant-msg[data-done=true]').length") == 1)
    browser_lib.assert_renders_telugu(browser_lib.font_probe(browser))
    browser_lib.screenshot(browser, "chat.png", tmp_path)

    browser.get(url + "/rate")
    wait(browser, lambda d: js(d, "return document.body.dataset.ready") == "true")
    name = browser.find_element(By.ID, "rater")
    name.send_keys("సీత")
    name.send_keys(Keys.TAB)
    wait(browser, lambda d: js(d, "return document.body.dataset.rater") == "సీత")
    browser.find_element(By.CSS_SELECTOR, '.score[data-item="q001-A"][data-c="fluency"][data-s="3"]').click()
    wait(browser, lambda d: js(d, "return document.querySelectorAll('.score.selected').length") == 1)
    browser_lib.assert_renders_telugu(browser_lib.font_probe(browser))
    browser_lib.screenshot(browser, "rate.png", tmp_path)


def test_pages_without_their_font_show_tofu(browser, tiny_models):
  """The control: with the font files blocked, the same probe finds tofu, so the test above can fail."""
  if (fonts := browser_lib.system_telugu_fonts()) != []:
    pytest.skip(f"this machine may have Telugu fonts (fc-list: {fonts}): no tofu to see")
  browser.execute_cdp_cmd("Network.enable", {})
  browser.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
  browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/fonts/*.woff2"]})
  try:
    with LiveServer(create_app(Engine(tiny_models))) as url:
      for page in ("/", "/rate"):
        browser.get(url + page)
        browser_lib.assert_tofu(browser_lib.font_probe(browser))
  finally:
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    browser.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})


def test_font_files_are_served_with_their_licence(tiny_models):
  from telugu_jax import webfont

  with LiveServer(create_app(Engine(tiny_models))) as url:
    css = httpx.get(url + "/fonts/telugu.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for weight, name in webfont.FILES.items():
      assert f'font-weight:{weight};font-display:swap;src:url("{name}")' in css.text
      got = httpx.get(url + f"/fonts/{name}")
      assert got.headers["content-type"] == "font/woff2" and got.content == (webfont.DIR / name).read_bytes()
      assert got.content[:4] == b"wOF2" and 20_000 < len(got.content) < 60_000
    assert "SIL OPEN FONT LICENSE Version 1.1" in httpx.get(url + "/fonts/OFL.txt").text
    for bad in ("nope.woff2", "..%2Fapp.py", "%2E%2E%2F__init__.py"):
      assert httpx.get(url + f"/fonts/{bad}").status_code == 404, bad

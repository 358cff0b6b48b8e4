"""`python -m telugu_jax.serve` as a user runs it (a subprocess), with an API key: every route refuses a
request without it, the openai client with it gets answers, a page opened as `/?api_key=` gets a cookie."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from telugu_jax.serve.__main__ import main

from .conftest import free_port
from .test_ratings import kit_sheet

KEY = "test-key-7Hq2-x9"
ROUTES = [("GET", "/"), ("GET", "/rate"), ("GET", "/health"), ("GET", "/v1/models"), ("GET", "/rate/api/items"),
          ("GET", "/rate/api/scores?rater=x"), ("GET", "/rate/export.csv?rater=x"), ("GET", "/no-such-route"),
          ("POST", "/v1/chat/completions"), ("POST", "/rate/api/score")]


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dir, tmp_path_factory):
  sheet, _ = kit_sheet(tmp_path_factory.mktemp("auth"))
  port = free_port()
  env = {**os.environ, "TJ_TEST_KEY": KEY, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen([sys.executable, "-m", "telugu_jax.serve", "--checkpoint", str(tiny_model_dir),
                           "--port", str(port), "--api-key-env", "TJ_TEST_KEY", "--rate-sheet", sheet],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 120
  while True:
    try:
      if httpx.get(url + "/health", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
        break
    except httpx.TransportError:
      pass
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      pytest.fail(f"the server did not start:\n{proc.stdout.read()}")
    time.sleep(0.2)
  yield url
  proc.terminate()
  proc.wait(timeout=30)


def test_every_route_needs_the_key(keyed_server):
  for method, path in ROUTES:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
      r = httpx.request(method, keyed_server + path, headers=headers, json={})
      assert r.status_code == 401, (method, path, headers, r.status_code)
      assert "API key" in r.json()["error"]["message"]
    r = httpx.request(method, keyed_server + path, headers={"Authorization": f"Bearer {KEY}"}, json={})
    assert r.status_code != 401, (method, path)


def test_openai_client_with_and_without_the_key(keyed_server):
  messages = [{"role": "user", "content": "నమస్కారం"}]
  with pytest.raises(openai.AuthenticationError):
    openai.OpenAI(base_url=keyed_server + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
        model="tiny", messages=messages)
  out = openai.OpenAI(base_url=keyed_server + "/v1", api_key=KEY).chat.completions.create(
      model="tiny", messages=messages, max_tokens=4, temperature=0)
  assert out.choices[0].finish_reason in ("stop", "length") and out.usage.completion_tokens >= 1


def test_page_with_key_in_query_sets_a_cookie(keyed_server):
  with httpx.Client(base_url=keyed_server) as browser:
    r = browser.get("/rate", params={"api_key": KEY})
    assert r.status_code == 303 and r.headers["location"] == "/rate"  # the key leaves the address bar
    assert "httponly" in r.headers["set-cookie"].lower()
    assert browser.get("/rate").status_code == 200       # the cookie now opens pages ...
    assert browser.get("/v1/models").status_code == 200  # ... and the API the page calls
  assert httpx.get(keyed_server + "/rate", params={"api_key": "wrong"}).status_code == 401


def test_cli_refuses_an_unset_key_variable_and_bad_adapters(tiny_model_dir, monkeypatch, capsys):
  monkeypatch.delenv("TJ_UNSET_KEY", raising=False)
  with pytest.raises(SystemExit) as e:
    main(["--checkpoint", str(tiny_model_dir), "--api-key-env", "TJ_UNSET_KEY"])
  assert e.value.code == 2 and "TJ_UNSET_KEY" in capsys.readouterr().err
  assert main(["--checkpoint", str(tiny_model_dir), "--adapter", "no-equals-sign"]) == 2
  assert "NAME=DIR" in capsys.readouterr().err
  assert main(["--checkpoint", str(tiny_model_dir) + "-missing"]) == 2
  assert "not a telugu-jax model directory" in capsys.readouterr().err

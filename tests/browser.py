"""Headless Chromium for the page and report tests: Debian's `chromium` and `chromium-driver`, installed
with apt-get when missing (CI machines start bare, and `make test` must need no manual step); where that
cannot be done (no root, no package mirror), the calling test skips and says what to run."""

import os
import shutil
import subprocess

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
APT_PACKAGES = ("chromium", "chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def ensure_chromium() -> str:
  """The Chromium binary's path, installing the packages first if needed; pytest.skip with the reason if not."""
  if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
    return CHROMIUM
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
  return CHROMIUM

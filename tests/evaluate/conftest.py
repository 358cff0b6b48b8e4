"""Fixtures of the evaluation tests: a headless Chromium for the report test.

Debian's `chromium` is installed with apt-get when /usr/bin/chromium is missing (CI machines start bare);
where that is impossible (no root, no network), the tests that need it skip and say why.
"""

import os
import shutil
import subprocess

import pytest

CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str | None:
  """Path of a chromium binary, installing Debian's package if needed; None (with the reason printed) if not."""
  found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
  if found:
    return found
  if shutil.which("apt-get") is None or os.geteuid() != 0:
    return None
  env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
  for cmd in (["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
              ["apt-get", "update", "-q"],
              ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if cmd[1] == "install" and done.returncode == 0 and os.path.exists(CHROMIUM):
      return CHROMIUM
  return None


@pytest.fixture(scope="session")
def chromium():
  path = ensure_chromium()
  if path is None:
    pytest.skip("headless Chromium is not available and `apt-get install chromium` failed (needs root and "
                "Debian's package mirror); install it to run the report rendering test")
  return path

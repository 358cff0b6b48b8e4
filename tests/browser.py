"""Headless Chromium for the page and report tests: Debian's `chromium` and `chromium-driver`, installed
with apt-get when missing (CI machines start bare, and `make test` must need no manual step); where that
cannot be done (no root, no package mirror), the calling test skips and says what to run.

`font_probe` and `assert_renders_telugu` check in the page that Telugu is drawn in the font the page ships
(telugu_jax.webfont), not as tofu, which is what a machine with no Telugu font (these test machines) shows."""

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


def start_driver(profile_dir, *, window: str = "1200,900"):
  """A Selenium-driven headless Chromium (the binaries given by path: Selenium never downloads one)."""
  webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra lists it)")
  from selenium.webdriver.chrome.service import Service

  ensure_chromium()
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in (*FLAGS, f"--window-size={window}", f"--user-data-dir={profile_dir}"):
    options.add_argument(flag)
  driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
  driver.set_page_load_timeout(60)
  return driver


def system_telugu_fonts() -> list[str] | None:
  """The machine's own Telugu fonts (fontconfig), None without `fc-list`: with none, Telugu that a page
  draws in no font of its own is boxes (tofu)."""
  if shutil.which("fc-list") is None:
    return None
  done = subprocess.run(["fc-list", ":lang=te", "family"], capture_output=True, text=True, timeout=60)
  return sorted(set(done.stdout.split("\n")) - {""})


# Widths of Telugu strings in the page's font stack and in the same stack without the shipped family (what the
# page would show without it), once the page's fonts have loaded. The conjunct క్ష is three code points
# shaped into one narrow cluster; as tofu it is three boxes, exactly as wide as the three letters కకక.
FONT_PROBE = """
const [family, sample, done] = arguments;
document.fonts.ready.then(() => {
  const stack = getComputedStyle(document.body).fontFamily;
  const without = stack.split(',').map((s) => s.trim()).filter((s) => s.replace(/["']/g, '') !== family).join(', ');
  const span = document.createElement('span');
  span.style.cssText = 'position:absolute;left:-9999px;top:0;white-space:nowrap;font-size:32px;font-weight:400';
  document.body.appendChild(span);
  const width = (text, fam) => { span.style.fontFamily = fam; span.textContent = text;
                                 return span.getBoundingClientRect().width; };
  const measure = (fam) => ({conjunct: width('క్ష', fam), letters: width('కకక', fam), sample: width(sample, fam)});
  const result = {stack, check: document.fonts.check(`16px "${family}"`, 'తెలుగు'),
                  faces: [...document.fonts].filter((f) => f.family.replace(/["']/g, '') === family)
                                            .map((f) => `${f.weight} ${f.status}`),
                  page: measure(stack), without: measure(without)};
  span.remove();
  done(result);
});
"""
TELUGU_SAMPLE = "తెలుగు భాష: క్షేమం, శ్రీ, ద్వారా।"


def font_probe(driver) -> dict:
  """FONT_PROBE run in the page open in `driver`."""
  from telugu_jax.webfont import FAMILY

  driver.set_script_timeout(30)
  return driver.execute_async_script(FONT_PROBE, FAMILY, TELUGU_SAMPLE)


def assert_renders_telugu(probe: dict) -> None:
  """The page draws Telugu in the font it ships: its stack starts with it, `document.fonts.check` is true, the
  conjunct క్ష is shaped (one cluster, far narrower than three letters; tofu draws three equal boxes), and the
  sample is not as wide as in the stack without the font. On a machine with no Telugu font, that stack is
  checked to draw tofu, so this test fails there if the font is not loaded."""
  from telugu_jax.webfont import FAMILY

  page, without = probe["page"], probe["without"]
  assert probe["stack"].startswith(f'"{FAMILY}"'), probe
  assert probe["check"] and "400 loaded" in probe["faces"], probe
  assert page["conjunct"] < 0.6 * page["letters"], probe
  assert abs(page["sample"] - without["sample"]) > 1, probe
  if system_telugu_fonts() == []:
    assert without["conjunct"] == without["letters"], probe  # tofu: one box per code point, all one width


def assert_tofu(probe: dict) -> None:
  """What `assert_renders_telugu` rejects: the font failed, and Telugu is boxes of one width."""
  assert not probe["check"] and "400 error" in probe["faces"], probe
  assert probe["page"] == probe["without"] and probe["page"]["conjunct"] == probe["page"]["letters"], probe


def screenshot(driver, name: str, fallback_dir) -> str:
  """Saves the window as PNG in $TELUGU_JAX_SCREENSHOTS (how docs/screenshots/ is made) or `fallback_dir`."""
  folder = os.environ.get("TELUGU_JAX_SCREENSHOTS") or str(fallback_dir)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, name)
  assert driver.save_screenshot(path) and os.path.getsize(path) > 1000, path
  return path

"""The Telugu web font that the browser pages carry, so Telugu renders on machines with no Telugu font.

A fresh Linux box, a server image or a CI machine has no Telugu font, and a page that names only system fonts
shows every Telugu letter as a box. The chat and rating pages link `fonts/telugu.css`, which the server makes
from `face_css` and serves with the font files (`GET /fonts/NAME`, `asset`); report.html embeds the fonts as
`data:` URLs (`embedded_css`) so it stays one self-contained file.

The files in telugu_jax/assets/fonts/ are Noto Sans Telugu v2.005 (Google Fonts' static TTFs, SIL Open Font
License 1.1, OFL.txt beside them) subset by scripts/subset_font.py to the Telugu block, ZWNJ/ZWJ, Latin and
punctuation: 42,216 bytes (regular) and 43,652 bytes (bold) of woff2.
"""

from __future__ import annotations

import base64
import functools
import pathlib

FAMILY = "Noto Sans Telugu Subset"  # its own name, so a system font called "Noto Sans Telugu" never stands in
DIR = pathlib.Path(__file__).parent / "assets" / "fonts"
FILES = {400: "NotoSansTelugu-Regular.subset.woff2", 700: "NotoSansTelugu-Bold.subset.woff2"}
LICENCE = "OFL.txt"
STYLESHEET = "telugu.css"  # served beside the files, so its relative urls name them


def face_css(url: dict[int, str]) -> str:
  """`@font-face` rules for FAMILY, one per weight, the file of weight w at `url[w]`."""
  return "".join(f'@font-face{{font-family:"{FAMILY}";font-style:normal;font-weight:{weight};font-display:swap;'
                 f'src:url("{href}") format("woff2")}}\n'
                 for weight, href in url.items())


@functools.cache
def embedded_css() -> str:
  """The `@font-face` rules with the fonts inline as base64 `data:` URLs (about 115 KB), for report.html."""
  data = {w: base64.b64encode((DIR / name).read_bytes()).decode("ascii") for w, name in FILES.items()}
  return face_css({w: f"data:font/woff2;base64,{b64}" for w, b64 in data.items()})


def asset(name: str) -> tuple[bytes, str] | None:
  """What the server sends for `GET /fonts/{name}`: (body, media type), or None for a name it does not serve."""
  if name == STYLESHEET:
    return face_css(FILES).encode(), "text/css; charset=utf-8"
  if name in FILES.values():
    return (DIR / name).read_bytes(), "font/woff2"
  if name == LICENCE:
    return (DIR / name).read_bytes(), "text/plain; charset=utf-8"
  return None

"""Make the Telugu web fonts shipped in telugu_jax/assets/fonts/ (served with the chat and rating pages and
embedded in report.html, so Telugu renders on machines with no Telugu font installed).

    npm pack @expo-google-fonts/noto-sans-telugu@0.4.2 && tar xzf expo-google-fonts-noto-sans-telugu-0.4.2.tgz
    pip install -e '.[fonts]'   # fontTools + brotli (woff2 is brotli-compressed)
    python scripts/subset_font.py package/400Regular/NotoSansTelugu_400Regular.ttf \
        package/700Bold/NotoSansTelugu_700Bold.ttf
    cp package/LICENSE_FONT telugu_jax/assets/fonts/OFL.txt

The sources are Google Fonts' static Noto Sans Telugu v2.005 TTFs (SIL Open Font License 1.1, no reserved
font name). Debian's fonts-noto-core build (v2.001) has no Latin letters, so it is not used. The subset keeps
the Telugu block, ZWNJ/ZWJ, the dotted circle (shown under a lone vowel sign), Basic Latin, Latin-1, general
punctuation and the dandas (934 of the font's 1078 glyphs), with every OpenType layout feature: conjuncts
and vowel signs are GSUB/GPOS. 180 KB of TTF become about 42 KB of woff2 per weight.
"""

from __future__ import annotations

import argparse
import pathlib

from fontTools import subset

OUT = pathlib.Path(__file__).resolve().parents[1] / "telugu_jax" / "assets" / "fonts"
UNICODES = [
    *range(0x0020, 0x007F),  # Basic Latin
    *range(0x00A0, 0x0100),  # Latin-1 supplement (nbsp, ×, ·, ©)
    *range(0x0C00, 0x0C80),  # Telugu
    0x0964, 0x0965,          # danda, double danda
    *range(0x200B, 0x2010),  # zwsp, ZWNJ, ZWJ, lrm, rlm
    *range(0x2010, 0x2028),  # dashes, quotes, bullet, ellipsis
    0x2039, 0x203A, 0x20B9, 0x2212, 0x25CC,  # angle quotes, rupee, minus, dotted circle
]


def subset_font(src: pathlib.Path, dst: pathlib.Path) -> int:
  """Writes the woff2 subset of `src` to `dst`; returns its size in bytes."""
  options = subset.Options()
  options.layout_features = ["*"]
  options.hinting = False  # the sources have no glyph hints, only a 7-byte prep table: drop it
  options.flavor = "woff2"
  options.name_IDs = ["*"]  # keep the copyright and licence records
  options.notdef_outline = True
  font = subset.load_font(str(src), options)
  subsetter = subset.Subsetter(options)
  subsetter.populate(unicodes=UNICODES)
  subsetter.subset(font)
  subset.save_font(font, str(dst), options)
  return dst.stat().st_size


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("fonts", nargs="+", type=pathlib.Path, help="NotoSansTelugu_400Regular.ttf, ..._700Bold.ttf")
  args = parser.parse_args()
  OUT.mkdir(parents=True, exist_ok=True)
  for src in args.fonts:
    weight = "Bold" if "Bold" in src.stem else "Regular"
    dst = OUT / f"NotoSansTelugu-{weight}.subset.woff2"
    print(f"{src} ({src.stat().st_size} bytes) -> {dst} ({subset_font(src, dst)} bytes)")


if __name__ == "__main__":
  main()

"""Name tables run both ways, Meta's rotary permutation is undone exactly, key-map files parse."""

import json

import numpy as np
import pytest

from telugu_jax.convert import keymaps
from telugu_jax.convert.errors import ConversionError
from telugu_jax.convert.to_orbax import expected_shapes
from telugu_jax.model import LlamaConfig


@pytest.mark.parametrize("table", [keymaps.HF, keymaps.META], ids=["hf", "meta"])
def test_tables_are_two_way(table):
  config = LlamaConfig.tiny(n_layers=3)
  paths = list(expected_shapes(config)["params"])
  names = [table.source_name(p) for p in paths]
  assert None not in names and len(set(names)) == len(paths)
  plan = keymaps.make_plan(names, table.rules, dict.fromkeys(paths, ()), config, table=table)
  assert {(a.source, a.target) for a in plan.assignments} == set(zip(names, paths, strict=True))
  assert keymaps.guess_table(names) is table


def test_meta_rotary_permutation_is_undone_exactly():
  # Meta interleaves each head's rotary pairs (x0, y0, x1, y1, ...); HF keeps halves (x0, x1, ..., y0, y1, ...).
  n_heads, head_dim = 3, 4
  meta = np.array([[h * 100 + 10 * pair + part] for h in range(n_heads) for pair in range(2) for part in range(2)])
  hf = keymaps.meta_to_hf_rotary(meta, n_heads)
  want = [[h * 100 + 10 * pair + part] for h in range(n_heads) for part in range(2) for pair in range(2)]
  np.testing.assert_array_equal(hf, want)
  w = np.random.default_rng(0).standard_normal((n_heads * head_dim, 5))
  np.testing.assert_array_equal(keymaps.hf_to_meta_rotary(keymaps.meta_to_hf_rotary(w, n_heads), n_heads), w)


def test_key_map_files(tmp_path):
  as_dict = tmp_path / "a.json"
  as_dict.write_text(json.dumps({r"blocks\.(\d+)\.q\.weight": r"layers_\1/self_attn/q_proj/kernel",
                                 r"emb": "embed_tokens/embedding", r"mask": None}))
  rules = keymaps.load_key_map(as_dict)
  assert [r.transform.name for r in rules] == ["transpose", "identity", "identity"] and rules[2].target is None
  as_list = tmp_path / "b.json"
  as_list.write_text(json.dumps({"rules": [[r"wq\.(\d+)", r"layers_\1/self_attn/q_proj/kernel", "meta_q"]]}))
  assert keymaps.load_key_map(as_list)[0].transform.name == "meta_q"
  for bad, message in (({"a(": "x"}, "not a valid regex"), ([["a", "x", "rotate"]], "unknown transform 'rotate'"),
                       ("just a string", "unknown shape")):
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConversionError, match=message):
      keymaps.load_key_map(tmp_path / "bad.json")

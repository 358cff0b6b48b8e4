"""The SFT/pretraining loader: packed rows against each example encoded alone, model logits on packed rows
against each example run alone, resume in a new process, sharding, shuffling, rejections, efficiency."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from telugu_jax.chat_format import ChatFormat
from telugu_jax.data.loader import LoaderConfig, count_batches, count_pretrain_batches, pretrain_dataset, sft_dataset
from telugu_jax.data.packing import BATCH_KEYS, LoaderStats
from telugu_jax.data.records import Conversation, Turn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Questions and answers written for these tests (everyday topics).
PAIRS = [
    ("తెలుగు భాష ఏ రాష్ట్రాల్లో ఎక్కువగా మాట్లాడతారు?", "తెలుగును ఆంధ్రప్రదేశ్, తెలంగాణ రాష్ట్రాల్లో ఎక్కువగా మాట్లాడతారు."),
    ("వర్షాకాలంలో ఆరోగ్యంగా ఉండటానికి ఏం చేయాలి?",
     "కాచి చల్లార్చిన నీళ్ళు తాగండి, వేడి ఆహారం తినండి, దోమలు కుట్టకుండా జాగ్రత్త పడండి."),
    ("ఐదు పండ్ల పేర్లు చెప్పండి.", "మామిడి, అరటి, జామ, సపోటా, దానిమ్మ."),
    ("పన్నెండుని మూడుతో భాగిస్తే ఎంత?", "నాలుగు."),
    ("మంచి నిద్ర కోసం ఒక సలహా ఇవ్వండి.", "పడుకునే ముందు గంట సేపు ఫోన్ చూడకండి. రోజూ ఒకే సమయానికి పడుకోండి."),
    ("గోదావరి నది ఎక్కడ పుడుతుంది?", "గోదావరి నది మహారాష్ట్రలోని త్రయంబకేశ్వర్ దగ్గర పుడుతుంది."),
    ("ఈ వాక్యాన్ని ఆంగ్లంలోకి అనువదించండి: నాకు పుస్తకాలు చదవడం ఇష్టం.", "I like reading books."),
    ("ఉదయం అల్పాహారానికి ఏమి తినవచ్చు?", "ఇడ్లీ, దోశ, ఉప్మా లేదా పెసరట్టు తినవచ్చు.\nవాటితో పాటు ఒక పండు కూడా తీసుకోండి."),
    ("పిల్లలకు ఒక కథ పేరు చెప్పండి.", "'దాహం వేసిన కాకి' కథ పిల్లలకు బాగా నచ్చుతుంది."),
    ("సంక్రాంతిని ఎలా జరుపుకుంటారు?", "ఇంటి ముందు రంగుల ముగ్గులు వేసి, గాలిపటాలు ఎగరేసి, పిండివంటలు చేసుకుంటారు."),
]
L = 192  # row length in these tests: one- and two-exchange conversations fit (35..178 tokens), four do not


def make_conversations() -> list[Conversation]:
  convs = []
  for i, (u, a) in enumerate(PAIRS):
    convs.append(Conversation.single(f"one-{i}", u, a, source="test"))
  for i in range(len(PAIRS)):
    (u1, a1), (u2, a2) = PAIRS[i], PAIRS[(i + 3) % len(PAIRS)]
    convs.append(Conversation(f"two-{i}", (Turn("user", u1), Turn("assistant", a1), Turn("user", u2),
                                           Turn("assistant", a2)), source="test"))
  return convs


def write_jsonl(path, convs, extra_lines=()):
  with open(path, "w", encoding="utf-8") as f:
    for c in convs:
      f.write(c.to_json() + "\n")
    for line in extra_lines:
      f.write(line + "\n")
  return str(path)


@pytest.fixture(scope="module")
def chat_format(sp_tokenizer):
  return ChatFormat(sp_tokenizer)


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
  convs = make_conversations()
  return write_jsonl(tmp_path_factory.mktemp("sft") / "train.jsonl", convs), convs


def segments(batch):
  """Each packed example of a batch: its slice of every feature (segment ids must be contiguous)."""
  out = []
  for r in range(batch["segment_ids"].shape[0]):
    seg = batch["segment_ids"][r]
    for s in range(1, seg.max() + 1):
      idx = np.flatnonzero(seg == s)
      assert len(idx) and (np.diff(idx) == 1).all(), f"segment {s} of row {r} is not contiguous"
      out.append({k: batch[k][r, idx] for k in BATCH_KEYS} | {"row": r, "start": idx[0]})
  return out


def one_epoch(paths, chat_format, cfg, **kw):
  it = iter(sft_dataset(paths, chat_format, cfg, process_index=kw.pop("process_index", 0),
                        process_count=kw.pop("process_count", 1), **kw))
  return list(it), it.stats


def test_packed_rows_match_each_example_encoded_alone(sft_file, chat_format, sp_tokenizer):
  path, convs = sft_file
  cfg = LoaderConfig(max_seq_len=L, batch_size=4, num_epochs=1, seed=3)
  batches, stats = one_epoch(path, chat_format, cfg)
  expected = {}
  for c in convs:
    enc = chat_format.encode(c, max_len=L + 1)
    expected[tuple(enc.ids[:-1])] = (c, enc)
  seen = []
  for b in batches:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {k: ((4, L), np.int32) for k in BATCH_KEYS}
    pad = b["segment_ids"] == 0
    assert (b["loss_mask"][pad] == 0).all() and (b["inputs"][pad] == sp_tokenizer.pad_id).all()
    for s in segments(b):
      conv, enc = expected[tuple(s["inputs"])]
      seen.append(conv.id)
      np.testing.assert_array_equal(s["targets"], enc.ids[1:])      # shifted inside the example
      np.testing.assert_array_equal(s["loss_mask"], enc.loss_mask[1:])
      np.testing.assert_array_equal(s["positions"], np.arange(len(s["inputs"])))
      # Independently of the chat format's offsets: the loss tokens, decoded run by run, are exactly each
      # assistant response with its end token ("\n" before the next user turn; eos, which decodes to "").
      runs = np.split(np.arange(len(s["targets"])), np.flatnonzero(np.diff(s["loss_mask"])) + 1)
      decoded = [sp_tokenizer.decode(s["targets"][r]) for r in runs if s["loss_mask"][r[0]]]
      answers = [t.content for t in enc_turns(conv, enc)]
      assert decoded == [" " + a + "\n" for a in answers[:-1]] + [" " + answers[-1]]
      assert s["targets"][-1] == sp_tokenizer.eos_id and s["loss_mask"][-1] == 1
  assert sorted(seen) == sorted(c.id for c in convs)                    # every example exactly once
  assert any(len(segments({k: v[r:r + 1] for k, v in b.items()})) > 1 for b in batches for r in range(4))
  assert stats.examples == len(convs) and stats.loss_tokens == sum(e[1].loss_mask[1:].sum()
                                                                   for e in expected.values())


def enc_turns(conv, enc):
  """The assistant turns that survived encoding (oldest pairs may have been dropped to fit)."""
  return [t for t in conv.turns[enc.dropped_turns:] if t.role == "assistant"]


def test_packed_logits_equal_each_example_run_alone(sft_file, chat_format, sp_tokenizer):
  """The packing cross-contamination bug: with the batch's segment ids and positions, every packed
  example's logits equal those of the example run alone as an ordinary causal sequence."""
  import jax

  from telugu_jax.model import Llama, LlamaConfig

  path, _ = sft_file
  cfg = LoaderConfig(max_seq_len=L, batch_size=4, num_epochs=1, seed=1)
  batch = next(iter(sft_dataset(path, chat_format, cfg, process_index=0, process_count=1)))
  model = Llama(LlamaConfig.tiny(vocab_size=sp_tokenizer.vocab_size, max_seq_len=L))
  rng = np.random.default_rng(0)
  # Weights at std 0.2 (scales near 1): at the 0.02 init a leak between examples hides below 1e-5.
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: (1.0 if "scale" in jax.tree_util.keystr(p) else 0.0) + rng.normal(0, 0.2, x.shape).astype(
          np.float32), model.init_variables(jax.random.key(0)))
  apply = jax.jit(lambda tokens, pos, seg: model.apply(variables, tokens, positions=pos, segment_ids=seg))
  packed = np.asarray(apply(batch["inputs"], batch["positions"], batch["segment_ids"]))
  segs = segments(batch)
  assert len(segs) > 4  # rows hold more than one example
  alone = []
  for i in range(0, len(segs), 4):  # examples alone, left-aligned, 4 to a call: one compiled shape
    group = segs[i:i + 4]
    tokens = np.full((4, L), sp_tokenizer.pad_id, np.int32)
    for r, s in enumerate(group):
      tokens[r, :len(s["inputs"])] = s["inputs"]
    ordinary = np.broadcast_to(np.arange(L, dtype=np.int32), (4, L))
    out = np.asarray(apply(tokens, ordinary, np.ones((4, L), np.int32)))   # one segment: plain causal LM
    alone += [out[r, :len(s["inputs"])] for r, s in enumerate(group)]
  assert np.abs(packed).max() > 1.0
  for s, ref in zip(segs, alone, strict=True):
    got = packed[s["row"], s["start"]:s["start"] + len(s["inputs"])]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
  assert np.isfinite(packed).all()
  # The same check fails when the row is treated as one sequence (what a loader without segment ids gives).
  leaky = np.asarray(apply(batch["inputs"], batch["positions"], (batch["segment_ids"] > 0).astype(np.int32)))
  assert max(np.abs(leaky[s["row"], s["start"]:s["start"] + len(s["inputs"])] - a).max()
             for s, a in zip(segs, alone, strict=True) if s["start"] > 0) > 1e-2


RESUME_SCRIPT = """
import json, sys
import numpy as np
import orbax.checkpoint as ocp
from telugu_jax.chat_format import ChatFormat
from telugu_jax.data.loader import LoaderConfig, sft_dataset
from telugu_jax.tokenizer import SentencePieceTokenizer
tok_path, data, cfg_json, ckpt_dir, n, out = sys.argv[1:]
ds = sft_dataset(data, ChatFormat(SentencePieceTokenizer(tok_path)), LoaderConfig(**json.loads(cfg_json)),
                 process_index=0, process_count=1)
it = iter(ds)
with ocp.CheckpointManager(ckpt_dir, item_names=("loader",)) as mgr:
  it.set_state(mgr.restore(mgr.latest_step(), args=ocp.args.Composite(loader=ocp.args.JsonRestore()))["loader"])
batches = [next(it) for _ in range(int(n))]
np.savez(out, **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()},
         stats=np.array(json.dumps(it.stats.to_dict())))
"""


def test_resume_in_a_new_process_gives_the_same_batches(sft_file, chat_format, sp_tokenizer, tmp_path):
  path, _ = sft_file
  cfg = dict(max_seq_len=L, batch_size=3, seed=5, num_packing_bins=4)  # repeats forever, reshuffled per epoch
  it = iter(sft_dataset(path, chat_format, LoaderConfig(**cfg), process_index=0, process_count=1))
  k, m = 9, 8  # 20 examples ~ 14 rows an epoch: stopping after 9 batches crosses into the 2nd epoch
  for _ in range(k):
    next(it)
  state = it.get_state()
  import orbax.checkpoint as ocp

  with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("loader",)) as mgr:  # as the trainer saves it
    mgr.save(k, args=ocp.args.Composite(loader=ocp.args.JsonSave(state)))
  assert state["parent"]["parent"]["next_index"] > 20, state
  reference = [next(it) for _ in range(m)]
  tok = sp_tokenizer.save(tmp_path / "tok")
  subprocess.run([sys.executable, "-c", RESUME_SCRIPT, tok, path, json.dumps(cfg), str(tmp_path / "ckpt"),
                  str(m), str(tmp_path / "resumed.npz")], check=True, cwd=REPO,
                 env={**os.environ, "PYTHONPATH": REPO})
  resumed = np.load(tmp_path / "resumed.npz")
  for i, b in enumerate(reference):
    for key in BATCH_KEYS:
      np.testing.assert_array_equal(resumed[f"{i}/{key}"], b[key], err_msg=f"batch {k + i} {key}")
  assert json.loads(str(resumed["stats"])) == it.stats.to_dict()  # counters resume too


def test_two_processes_read_disjoint_and_complete_data(sft_file, chat_format):
  path, convs = sft_file
  cfg = LoaderConfig(max_seq_len=L, batch_size=4, num_epochs=1)
  by_inputs = {tuple(chat_format.encode(c, max_len=L + 1).ids[:-1]): c.id for c in convs}
  shards = []
  for p in range(2):
    batches, _ = one_epoch(path, chat_format, cfg, process_index=p, process_count=2)
    assert all(b["inputs"].shape == (2, L) for b in batches)          # global batch 4 over 2 processes
    shards.append([by_inputs[tuple(s["inputs"])] for b in batches for s in segments(b)])
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(by_inputs.values())
  assert abs(len(shards[0]) - len(shards[1])) <= 1
  # Hosts must agree on the step count: it covers the slower shard and is the same whoever asks.
  steps = count_batches(path, chat_format, cfg, process_count=2)
  assert steps == max(len(one_epoch(path, chat_format, cfg, process_index=p, process_count=2)[0]) for p in range(2))


def example_stream(path, chat_format, cfg, n):
  """The first n examples (unpacked) as conversation indices in order."""
  it = iter(sft_dataset(path, chat_format, cfg, process_index=0, process_count=1))
  out = []
  while len(out) < n:
    b = next(it)
    out += [tuple(s["inputs"]) for s in segments(b)]
  return out[:n]


def test_shuffle_is_seeded_and_new_each_epoch(sft_file, chat_format):
  path, convs = sft_file
  n = len(convs)
  cfg = LoaderConfig(max_seq_len=L, batch_size=3, packing=False, seed=7)   # 3 does not divide 20: batches
  stream = example_stream(path, chat_format, cfg, 2 * n)                 # straddle the epoch boundary
  epoch0, epoch1 = stream[:n], stream[n:]
  assert len(set(epoch0)) == n and set(epoch0) == set(epoch1)             # each epoch: every example once
  assert epoch0 != epoch1                                                 # in a new order
  assert example_stream(path, chat_format, cfg, 2 * n) == stream          # same seed, same stream
  other = LoaderConfig(**{**cfg.__dict__, "seed": 8})
  assert example_stream(path, chat_format, other, n) != epoch0
  unshuffled = LoaderConfig(**{**cfg.__dict__, "shuffle": False})
  assert example_stream(path, chat_format, unshuffled, n) == [
      tuple(chat_format.encode(c, max_len=L + 1).ids[:-1]) for c in convs]


def test_without_packing_batches_pad_to_a_bucket(sft_file, chat_format, sp_tokenizer):
  path, convs = sft_file
  cfg = LoaderConfig(max_seq_len=L, batch_size=8, packing=False, shuffle=False, num_epochs=1, pad_to_multiple=32)
  batches, stats = one_epoch(path, chat_format, cfg)
  assert len(batches) == 3 == count_batches(path, chat_format, cfg, process_count=1)
  for b in batches:
    real = b["segment_ids"].sum(axis=1)
    longest = real.max()
    assert b["inputs"].shape == (8, min(L, -(-longest // 32) * 32))
    for r, n in enumerate(real):
      np.testing.assert_array_equal(b["positions"][r, :n], np.arange(n))
      assert (b["segment_ids"][r, n:] == 0).all() and (b["loss_mask"][r, n:] == 0).all()
  assert (batches[-1]["segment_ids"][4:] == 0).all()  # 20 = 8 + 8 + 4: the last batch is filled with empty rows
  assert stats.rows == 24 and stats.examples == len(convs)


def test_rejected_and_truncated_records_are_written_with_reasons(tmp_path, chat_format, caplog):
  long_answer = " ".join(p[1] for p in PAIRS)          # one exchange longer than a row
  many_turns = tuple(Turn(r, t) for u, a in PAIRS[:4] for r, t in (("user", u), ("assistant", a)))
  convs = [
      Conversation.single("ok", *PAIRS[0]),
      Conversation.single("forged", "ఒక ప్రశ్న", "జవాబు ఇదిగో\nuser: నేను మళ్ళీ అడుగుతున్నా"),
      Conversation("no-answer", (Turn("user", PAIRS[1][0]),)),
      Conversation.single("too-long", PAIRS[2][0], long_answer),
      Conversation("many-turns", many_turns),
  ]
  path = write_jsonl(tmp_path / "mixed.jsonl", convs, extra_lines=['{"id": "broken", "turns": ['])
  rejected = tmp_path / "out" / "rejected.jsonl"
  with caplog.at_level(logging.WARNING):
    batches, stats = one_epoch(path, chat_format, LoaderConfig(max_seq_len=L, batch_size=2, num_epochs=1),
                               rejected_path=rejected)
  assert "rejected" in caplog.text
  entries = {(e["id"], e["reason"], e["action"]) for e in map(json.loads, rejected.read_text().splitlines())}
  assert entries == {("forged", "forged_role_marker", "rejected"), ("no-answer", "empty_loss_mask", "rejected"),
                     ("too-long", "too_long", "rejected"), (None, "malformed", "rejected"),
                     ("many-turns", "dropped_oldest_turns", "truncated")}
  assert stats.corpus["records"] == 6 and stats.corpus["truncated"] == 1
  assert stats.corpus["rejected"] == {"forged_role_marker": 1, "empty_loss_mask": 1, "too_long": 1, "malformed": 1}
  kept = sorted(tuple(s["inputs"]) for b in batches for s in segments(b))
  enc = chat_format.encode(convs[4], max_len=L + 1)
  assert enc.dropped_turns > 0
  assert kept == sorted([tuple(chat_format.encode(convs[0]).ids[:-1]), tuple(enc.ids[:-1])])
  # Under "reject", the conversation that needed truncating is rejected instead.
  cfg = LoaderConfig(max_seq_len=L, batch_size=2, num_epochs=1, over_long="reject")
  _, stats = one_epoch(path, chat_format, cfg, rejected_path=rejected)
  assert stats.corpus["rejected"]["too_long"] == 2 and stats.corpus["truncated"] == 0


def test_packing_efficiency_on_alpaca_like_lengths(tmp_path, chat_format, sp_tokenizer):
  """Many short examples and a long tail (log-normal, median ~150 tokens) at max_seq_len 1024."""
  from tests.conftest import TELUGU_SENTENCES

  filler = [t for t in TELUGU_SENTENCES if ":" not in t]
  filler_tokens = [len(sp_tokenizer.encode(" " + t)) for t in filler]
  rng = np.random.default_rng(0)
  convs = []
  for i, target in enumerate(np.clip(rng.lognormal(np.log(150), 0.8, 1500), 30, 950).astype(int)):
    u, a = PAIRS[i % len(PAIRS)]
    n, j = 40, i  # ~40 tokens of template, question and answer; filler sentences up to the target length
    while n < target:
      a, n, j = a + " " + filler[j % len(filler)], n + filler_tokens[j % len(filler)], j + 1
    convs.append(Conversation.single(f"c{i}", u, a))
  path = write_jsonl(tmp_path / "alpaca_like.jsonl", convs)
  batches, stats = one_epoch(path, chat_format, LoaderConfig(max_seq_len=1024, batch_size=8, num_epochs=1))
  lengths = np.array([len(chat_format.encode(c).ids) for c in convs])
  assert 120 < np.median(lengths) < 200 and np.percentile(lengths, 99) > 800   # the mix is what it says
  assert stats.examples == len(convs) and not stats.corpus["rejected"]
  assert stats.packing_efficiency >= 0.90, stats.to_dict()
  assert stats.packing_efficiency == (lengths - 1).sum() / (len(batches) * 8 * 1024)


def test_zero_loss_batch_is_reported(caplog):
  stats = LoaderStats()
  batch = {k: np.zeros((2, 8), np.int32) for k in BATCH_KEYS}
  batch["segment_ids"][0, :5] = 1
  with caplog.at_level(logging.WARNING):
    stats.update(batch)
  assert stats.zero_loss_batches == 1 and "no loss tokens" in caplog.text
  batch["loss_mask"][0, 2] = 1
  stats.update(batch)
  assert stats.zero_loss_batches == 1 and stats.loss_tokens == 1 and stats.tokens == 10


def test_pretraining_text_is_chunked_packed_and_fully_trained(tmp_path, sp_tokenizer):
  from tests.conftest import TELUGU_SENTENCES

  docs = [" ".join(TELUGU_SENTENCES[:3]), "\n".join(TELUGU_SENTENCES), TELUGU_SENTENCES[5]]  # the 2nd > 2 rows
  path = tmp_path / "prose.txt"
  path.write_text("\n\n".join(docs) + "\n\n\n", encoding="utf-8")
  cfg = LoaderConfig(max_seq_len=64, batch_size=2, num_epochs=1, shuffle=False)
  it = iter(pretrain_dataset(str(path), sp_tokenizer, cfg, process_index=0, process_count=1))
  batches = list(it)
  assert len(batches) == count_pretrain_batches(str(path), sp_tokenizer, cfg, process_count=1)
  segs = [s for b in batches for s in segments(b)]
  for s in segs:
    assert (s["loss_mask"] == 1).all()                                   # every real token is a target
  # Chunks of each document, in order, give back bos + ids + eos with every (token, next) pair once.
  ids = [[sp_tokenizer.bos_id, *sp_tokenizer.encode(d), sp_tokenizer.eos_id] for d in docs]
  assert len(ids[1]) > 2 * 64 + 1
  pairs = sorted((tuple(s["inputs"]), tuple(s["targets"])) for s in segs)
  expected = []
  for x in ids:
    for a in range(0, len(x) - 1, 64):
      chunk = x[a:a + 65]
      expected.append((tuple(chunk[:-1]), tuple(chunk[1:])))
  assert pairs == sorted(expected)
  assert it.stats.tokens == sum(len(x) - 1 for x in ids) == it.stats.loss_tokens


def test_bad_config_and_inputs_fail_with_clear_messages(sft_file, chat_format):
  path, _ = sft_file
  with pytest.raises(ValueError, match="over_long"):
    LoaderConfig(over_long="truncate")
  with pytest.raises(ValueError, match="divide evenly over 3 processes"):
    sft_dataset(path, chat_format, LoaderConfig(batch_size=4), process_index=0, process_count=3)
  with pytest.raises(FileNotFoundError, match="not found"):
    sft_dataset("/no/such/file.jsonl", chat_format, LoaderConfig(), process_index=0, process_count=1)
  with pytest.raises(ValueError, match="has no examples"):
    sft_dataset(path, chat_format, LoaderConfig(batch_size=32), process_index=31, process_count=32)

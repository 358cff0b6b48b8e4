"""The files Hugging Face tools read beside the weights: tokenizer, chat template, generation config.

The chat template is generated from our `ChatTemplate` (the one place the format lives), so that
`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` gives exactly the ids of
`ChatFormat.encode_prompt`, and a whole conversation gives `ChatFormat.encode(...).ids` (ending in eos).
Assistant replies sit in `{% generation %}` blocks covering what our loss covers (the reply with its
leading space and the token that ends it), so `return_assistant_tokens_mask=True` gives our loss mask.

A sentencepiece tokenizer is written as `tokenizer.model` plus a `tokenizer.json` built from it by
`transformers`' own converter, which follows the model's normaliser settings (our tokenizers: identity
normalisation, no dummy prefix). `transformers`' Llama tokenizer class would add a prefix space, so the
config names the generic fast class. Either way, `verify_tokenizer` loads the result with `AutoTokenizer`
and compares ids with ours before an export is accepted.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatFormat, ChatTemplate
from telugu_jax.convert.errors import ExportError
from telugu_jax.data.records import Turn
from telugu_jax.tokenizer import HFTokenizer, SentencePieceTokenizer

# Texts whose ids must agree between our tokenizer and the exported one (everyday Telugu, whitespace
# runs, newlines, ZWNJ, digits, Latin and an emoji for byte fallback).
PROBES = (
    "నమస్కారం! మీరు ఎలా ఉన్నారు?",
    "ఈ రోజు వాతావరణం చాలా బాగుంది, సాయంత్రం వర్షం పడవచ్చు.",
    "కంప్యూటర్\u200cలో  రెండు   ఖాళీలు\n\nకొత్త పేరా 2024",
    " ముందు ఖాళీ, చివర ఖాళీ ",
    "mixed తెలుగు and English 😀",
)
PROBE_CONVERSATIONS = (
    [Turn("user", "భారతదేశ రాజధాని ఏది?")],
    [Turn("user", "నమస్కారం"), Turn("assistant", "నమస్కారం! మీకు ఏం కావాలి?"),
     Turn("user", "ఒక చిన్న కవిత రాయండి.\nరెండు పంక్తులు చాలు.")],
)


def _lit(s: str) -> str:
  """A Jinja string literal (JSON escaping is valid Jinja: \\n, \\", \\uXXXX)."""
  return json.dumps(s)


def chat_template_jinja(t: ChatTemplate = DEFAULT_TEMPLATE) -> str:
  """Jinja that renders `bos + "user: u1\\nassistant: a1\\nuser: u2" [+ "\\nassistant:"] [+ eos]`.

  The separator after a user turn opens the assistant header; the one after an assistant reply ends
  that reply (and is inside its generation block), as in `ChatFormat.render`.
  """
  user, asst, sep, turn_sep = _lit(t.user), _lit(t.assistant), _lit(t.sep), _lit(t.turn_sep)
  return (
      "{%- for message in messages -%}"
      "{%- if message['role'] not in ['user', 'assistant'] -%}"
      "{{- raise_exception('this model knows the roles user and assistant only (no ' + message['role'] + "
      "' role); put instructions in the first user message') -}}"
      "{%- elif (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
      "{{- raise_exception('messages must alternate user, assistant, user, ... starting with user') -}}"
      "{%- endif -%}"
      "{%- endfor -%}"
      "{%- if add_generation_prompt and messages and messages[-1]['role'] != 'user' -%}"
      "{{- raise_exception('add_generation_prompt needs the last message to be from the user') -}}"
      "{%- endif -%}"
      "{{- bos_token -}}"
      "{%- for message in messages -%}"
      "{%- if message['role'] == 'user' -%}"
      f"{{{{- {user} + {sep} + message['content'] -}}}}"
      "{%- else -%}"
      f"{{{{- {turn_sep} + {asst} -}}}}"
      "{%- generation -%}"
      f"{{{{- {sep} + message['content'] + ({turn_sep} if not loop.last else eos_token) -}}}}"
      "{%- endgeneration -%}"
      "{%- endif -%}"
      "{%- endfor -%}"
      f"{{%- if add_generation_prompt -%}}{{{{- {turn_sep} + {asst} -}}}}{{%- endif -%}}"
  )


def _spm_tokenizer_json(tok: SentencePieceTokenizer, path: str) -> None:
  """tokenizer.json from the sentencepiece proto, with a post-processor adding bos like our encoders."""
  import sentencepiece.sentencepiece_model_pb2 as model_pb2
  from tokenizers import processors
  from transformers.convert_slow_tokenizer import SpmConverter

  proto = model_pb2.ModelProto()
  proto.ParseFromString(tok.sp.serialized_model_proto())
  # A dict makes transformers build a BPE model, a list of (piece, score) a unigram one (sentencepiece's default
  # model type: a BPE built from a unigram vocabulary segments differently).
  unigram = proto.trainer_spec.model_type == model_pb2.TrainerSpec.UNIGRAM
  vocab = [(p.piece, p.score) for p in proto.pieces] if unigram else {p.piece: i for i, p in enumerate(proto.pieces)}
  # legacy=True: the dummy prefix goes on the text after each special token, as sentencepiece puts it on the
  # text we encode after bos; with legacy=False Llama 2's tokenizer.model gave other ids for text that starts
  # with a space. Tokenizers without add_dummy_prefix (ours) are unaffected.
  hf_tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
  if hf_tok is None:
    raise ExportError("transformers could not convert this sentencepiece model (only BPE and unigram are supported)")
  special = {tok.bos_id, tok.eos_id, tok.pad_id, tok.sp.unk_id()}
  hf_tok.add_special_tokens([tok.id_to_piece(i) for i in sorted(special) if i >= 0])
  bos = tok.id_to_piece(tok.bos_id)
  hf_tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                        special_tokens=[(bos, tok.bos_id)])
  hf_tok.save(path)


def write_tokenizer_files(tokenizer, dst: str, *, template: ChatTemplate | None = DEFAULT_TEMPLATE,
                          model_max_length: int | None = None) -> None:
  """tokenizer.json (+ tokenizer.model), tokenizer_config.json with the chat template (none when `template` is
  None), special tokens map."""
  os.makedirs(dst, exist_ok=True)
  if isinstance(tokenizer, SentencePieceTokenizer):
    tokenizer.save(dst)
    _spm_tokenizer_json(tokenizer, os.path.join(dst, "tokenizer.json"))
  elif isinstance(tokenizer, HFTokenizer):
    shutil.copyfile(tokenizer.path, os.path.join(dst, "tokenizer.json"))
  else:
    raise ExportError(f"cannot export a tokenizer of type {type(tokenizer).__name__}")
  special = {"bos_token": tokenizer.id_to_piece(tokenizer.bos_id), "eos_token": tokenizer.id_to_piece(tokenizer.eos_id),
             "pad_token": tokenizer.id_to_piece(tokenizer.pad_id)}
  if isinstance(tokenizer, SentencePieceTokenizer) and tokenizer.sp.unk_id() >= 0:
    special["unk_token"] = tokenizer.id_to_piece(tokenizer.sp.unk_id())
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
            **({"chat_template": chat_template_jinja(template)} if template is not None else {}),
            "clean_up_tokenization_spaces": False, "model_input_names": ["input_ids", "attention_mask"]}
  if model_max_length:
    config["model_max_length"] = model_max_length
  with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, ensure_ascii=False, indent=1)
  with open(os.path.join(dst, "special_tokens_map.json"), "w") as f:
    json.dump(special, f, ensure_ascii=False, indent=1)


def write_generation_config(dst: str, tokenizer, max_length: int | None = None) -> None:
  """generation_config.json: generation stops at our eos, pads with our pad."""
  from transformers import GenerationConfig

  kw = {"max_length": max_length} if max_length else {}
  GenerationConfig(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
                   **kw).save_pretrained(dst)


def verify_tokenizer(dst: str, tokenizer, template: ChatTemplate | None = DEFAULT_TEMPLATE,
                     probes: Sequence[str] = PROBES) -> None:
  """Load the exported files with `AutoTokenizer` and require our ids: plain text and (unless `template` is
  None) the chat template."""
  from transformers import AutoTokenizer

  hf = AutoTokenizer.from_pretrained(dst)
  for text in probes:
    ours, theirs = tokenizer.encode(text), hf.encode(text, add_special_tokens=False)
    if ours != theirs:
      raise ExportError(f"the exported tokenizer encodes {text!r} as {theirs[:12]}..., ours as {ours[:12]}...; "
                        "Hugging Face users would feed the model other ids than it was trained on")
  if template is None:
    return
  fmt = ChatFormat(tokenizer, template)
  for turns in PROBE_CONVERSATIONS:
    ours = [int(i) for i in fmt.encode_prompt(turns)]
    messages = [{"role": t.role, "content": t.content} for t in turns]
    theirs = list(hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"])
    if ours != theirs:
      raise ExportError(f"the exported chat template gives other ids than our prompt encoding ({theirs[:12]}... vs "
                        f"{ours[:12]}...)")

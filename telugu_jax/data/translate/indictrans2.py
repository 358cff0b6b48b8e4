"""IndicTrans2 through `transformers` (`AutoModelForSeq2SeqLM`).

The hub checkpoints (ai4bharat/indictrans2-*) ship custom model and tokenizer code, so loading them
needs `trust_remote_code=True`, which is passed only when the user sets it. Pre/post-processing: the
`IndicTransToolkit` package's `IndicProcessor` when it is installed (it normalises punctuation and
transliterates script variants); otherwise our own minimum, the "src_lang tgt_lang text" tag prefix
the model expects. Texts are translated sentence by sentence (the translator splits them), in batches
of similar length (sorted, so padding is small), on the GPU when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence

from telugu_jax.data.translate.backend import OnDone


class IndicTrans2Backend:
  name = "indictrans2"
  style = "indictrans"
  split_sentences = True

  def __init__(self, model: str, src_lang: str = "eng_Latn", tgt_lang: str = "tel_Telu", *, batch_size: int = 16,
               max_new_tokens: int = 256, device: str = "auto", trust_remote_code: bool = False):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    self.model, self.src_lang, self.tgt_lang = model, src_lang, tgt_lang
    self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
    if device == "auto":
      device = "cuda" if torch.cuda.is_available() else "cpu"
    self.device = device
    try:
      self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
      self.net = AutoModelForSeq2SeqLM.from_pretrained(model, trust_remote_code=trust_remote_code).to(device).eval()
    except ValueError as e:
      if not trust_remote_code and "trust_remote_code" in str(e):
        raise ValueError(f"{model} needs its own code to load; if you trust it, set "
                         "--config.translate.trust_remote_code=True") from e
      raise
    try:
      from IndicTransToolkit.processor import IndicProcessor  # optional; not installable everywhere

      self.processor = IndicProcessor(inference=True)
    except ImportError:
      self.processor = None
    self.batches: list[list[int]] = []  # character lengths of the texts in each batch sent, for tests and logs

  def preprocess(self, texts: list[str]) -> list[str]:
    if self.processor is not None:
      return self.processor.preprocess_batch(texts, src_lang=self.src_lang, tgt_lang=self.tgt_lang)
    return [f"{self.src_lang} {self.tgt_lang} {t}" for t in texts]

  def postprocess(self, texts: list[str]) -> list[str]:
    if self.processor is not None:
      return self.processor.postprocess_batch(texts, lang=self.tgt_lang)
    return [t.strip() for t in texts]

  def translate(self, texts: Sequence[str], on_done: OnDone) -> None:
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      try:
        enc = self.tokenizer(self.preprocess([texts[i] for i in idx]), padding="longest", truncation=True,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
          out = self.net.generate(**enc, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False)
        decoded = self.postprocess(self.tokenizer.batch_decode(out, skip_special_tokens=True))
      except (RuntimeError, ValueError) as e:  # e.g. out of memory: report per text, keep going
        for i in idx:
          on_done(i, e, {})
        continue
      self.batches.append([len(texts[i]) for i in idx])
      n_in = enc["attention_mask"].sum(dim=1).tolist()
      n_out = (out != (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else -1)).sum(1).tolist()
      for j, i in enumerate(idx):
        on_done(i, decoded[j], {"prompt_tokens": int(n_in[j]), "completion_tokens": int(n_out[j])})

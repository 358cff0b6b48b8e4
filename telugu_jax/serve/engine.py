"""The batching queue between HTTP requests and the generation program.

Requests are `Job`s put on one queue; one worker thread owns the device. It takes the oldest job, waits
while others keep arriving (until `batch_window_s` passes without a new one, `MAX_WINDOWS` windows at
most), and decodes every waiting job that can share the program with it (same model and sampling
settings, prompts and limits that fit the context together) as one batch. So 16 users who ask at the
same time cost about one decode, not 16. Jobs that arrive while a batch runs form the next batch. This
is static batching: a job does not join a batch already decoding, because the KV cache writes every row
at one shared slot (`telugu_jax.model.cache`); joining mid-flight would need a slot index per row.

Per row, on the host, in the decode loop's callback (`telugu_jax.rows.RowTracker`, the one row tracker
generation uses too): the request's own stop strings and `max_tokens`, streaming of the text that can no
longer change, and cancellation (a client that hangs up sets `job.cancelled`; its row ends at the next
step, and a batch whose rows have all ended stops). `Generator.generate` runs the batch with the tracker as
its `host_hook`; the program, its compile cache and the sampling code are generation's own.

Several models (`--adapter NAME=DIR`) are generators over one base in memory, each applying its adapter on
the fly (`telugu_jax.inference.load_base_and_adapters`); a batch holds one model's jobs.

Compiles are bounded: the batch is padded to a power of two (padding rows end at the first step) and
the program's token budget is rounded up to a power of two (each row still ends at its own limit), so
the server compiles one program per (batch size, prompt bucket, budget, sampling mode), not per request.

Streaming shows exactly what the final answer will be: text that could still become a stop string, an
incomplete UTF-8 sequence, a line that could still turn into a role marker and trailing whitespace are
held back until decided, so the streamed pieces join to the non-streamed answer (`clean_answer`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import threading
import time
from collections.abc import Callable

from telugu_jax.chat_format import ChatFormat
from telugu_jax.generate import Generator, SamplingConfig
from telugu_jax.rows import RowSpec, RowTracker

MAX_WINDOWS = 5
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "cancelled"}


@dataclasses.dataclass
class ServedModel:
  """One name in `/v1/models`: a generator (the base, or the shared base with an adapter) and its chat format."""

  name: str
  generator: Generator
  fmt: ChatFormat
  source: str  # where it was loaded from, shown to users


@dataclasses.dataclass(frozen=True)
class Result:
  text: str               # the answer as `clean_answer` gives it; equals the streamed pieces joined
  finish_reason: str      # OpenAI's: "stop" or "length"; "cancelled" when the client left
  completion_tokens: int  # tokens generated, through the one that ended the answer
  batch_size: int         # how many requests were decoded together with this one (itself included)


Sink = Callable[[str, object], None]  # ("delta", str) | ("done", Result) | ("error", str)


@dataclasses.dataclass
class Job:
  model: str
  prompt_ids: list[int]
  max_tokens: int
  sink: Sink
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int | None = None
  stop: tuple[str, ...] = ()
  cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
  arrived: float = dataclasses.field(default_factory=time.monotonic)
  id: int = dataclasses.field(default_factory=itertools.count().__next__)

  def key(self) -> tuple:
    """Jobs with equal keys can share one program: sampling knobs are one value per batch, and a seeded
    request runs alone so the same seed gives the same answer whatever else is queued."""
    sampling = ("greedy",) if self.temperature == 0 else ("sample", self.temperature, self.top_p)
    return (self.model, sampling, ("seed", self.id) if self.seed is not None else None)


def pow2_at_least(n: int, floor: int = 1) -> int:
  return max(floor, 1 << max(0, n - 1).bit_length())


class Engine:
  """Owns the device: one worker thread decodes batches of queued jobs (see the module docstring)."""

  def __init__(self, models: dict[str, ServedModel], *, max_batch: int = 16, batch_window_s: float = 0.02,
               seed: int = 0):
    if not models:
      raise ValueError("the engine needs at least one model")
    if max_batch < 1:
      raise ValueError("max_batch must be >= 1")
    self.models, self.max_batch, self.batch_window_s = models, max_batch, batch_window_s
    self._pending: collections.deque[Job] = collections.deque()
    self._cond = threading.Condition()
    self._running = False
    self._thread: threading.Thread | None = None
    self._seeds = itertools.count(seed)
    self.stats = {"batches": 0, "jobs": 0, "tokens": 0, "cancelled": 0, "largest_batch": 0, "decode_s": 0.0,
                  "host_s": 0.0, "batch_sizes": {}}  # requests per batch -> how many batches had that many
    self.finished: collections.deque[tuple[int, Result]] = collections.deque(maxlen=256)  # (job id, result)

  # ---- lifecycle ---------------------------------------------------------------------------------------
  def start(self) -> Engine:
    if self._thread is None:
      self._running = True
      self._thread = threading.Thread(target=self._loop, name="telugu-jax-engine", daemon=True)
      self._thread.start()
    return self

  def stop(self) -> None:
    with self._cond:
      self._running = False
      self._cond.notify_all()
    if self._thread is not None:
      self._thread.join(timeout=60)
      self._thread = None

  def submit(self, job: Job) -> Job:
    if job.model not in self.models:
      raise KeyError(job.model)
    if not self._running:
      raise RuntimeError("the engine is not running")
    with self._cond:
      self._pending.append(job)
      self._cond.notify_all()
    return job

  def context(self, model: str) -> int:
    return self.models[model].generator.config.max_seq_len

  # ---- the worker ----------------------------------------------------------------------------------------
  def _loop(self) -> None:
    while True:
      jobs = self._take_batch()
      if jobs is None:
        return
      if jobs:
        self._run_guarded(jobs)

  def _take_batch(self) -> list[Job] | None:
    with self._cond:
      while self._running and not self._pending:
        self._cond.wait()
      if not self._running:
        for job in self._pending:
          job.sink("error", "the server is shutting down")
        self._pending.clear()
        return None
      # Wait for more while they keep coming: until `batch_window_s` passes with no new arrival, and at most
      # `MAX_WINDOWS` windows after the oldest (a burst of clients reaches the queue spread out, slower still
      # when the server is busy).
      while len(self._pending) < self.max_batch:
        deadline = min(self._pending[0].arrived + MAX_WINDOWS * self.batch_window_s,
                       self._pending[-1].arrived + self.batch_window_s)
        if (left := deadline - time.monotonic()) <= 0:
          break
        self._cond.wait(left)
      key = self._pending[0].key()
      context = self.context(self._pending[0].model)
      chosen, keep, longest, most = [], collections.deque(), 0, 0
      for job in self._pending:
        if job.cancelled.is_set():
          self._finish(job, Result("", "cancelled", 0, 0))
          continue
        fits = max(longest, len(job.prompt_ids)) + max(most, job.max_tokens) <= context
        if job.key() == key and len(chosen) < self.max_batch and (fits or not chosen):
          chosen.append(job)
          longest, most = max(longest, len(job.prompt_ids)), max(most, job.max_tokens)
        else:
          keep.append(job)
      self._pending = keep
      return chosen

  def _finish(self, job: Job, result: Result) -> None:
    self.stats["jobs"] += 1
    self.stats["tokens"] += result.completion_tokens
    self.stats["cancelled"] += result.finish_reason == "cancelled"
    self.finished.append((job.id, result))
    job.sink("done", result)

  def _run_guarded(self, jobs: list[Job]) -> None:
    try:
      self._run_batch(jobs)
    except Exception as e:  # one bad batch must not stop the server; its clients get the message
      for job in jobs:
        job.sink("error", f"generation failed: {type(e).__name__}: {e}")

  def _run_batch(self, jobs: list[Job]) -> None:
    served = self.models[jobs[0].model]
    gen, tok = served.generator, served.fmt.tokenizer
    n = len(jobs)
    batch = min(pow2_at_least(n), max(self.max_batch, n))
    longest = max(len(j.prompt_ids) for j in jobs)
    budget = min(pow2_at_least(max(j.max_tokens for j in jobs), 16), gen.config.max_seq_len - longest)
    first = jobs[0]
    seed = first.seed if first.seed is not None else next(self._seeds)
    sampling = SamplingConfig(max_new_tokens=budget, temperature=first.temperature, top_p=first.top_p, seed=seed)
    stops = tuple(served.fmt.template.stop_strings)
    specs = [RowSpec(stops=stops + job.stop, max_tokens=job.max_tokens, cancelled=job.cancelled,
                     on_text=functools.partial(job.sink, "delta")) for job in jobs]
    tracker = RowTracker(tok, specs, batch, eos_id=int(tok.eos_id), max_steps=budget, template=served.fmt.template)
    t0 = time.perf_counter()
    gen.generate([j.prompt_ids for j in jobs], sampling, pad_batch_to=batch, host_hook=tracker)
    self.stats["batches"] += 1
    self.stats["decode_s"] += time.perf_counter() - t0
    self.stats["host_s"] += tracker.host_s
    self.stats["batch_sizes"][n] = self.stats["batch_sizes"].get(n, 0) + 1
    self.stats["largest_batch"] = max(self.stats["largest_batch"], n)
    for job, row in zip(jobs, tracker.rows, strict=True):
      reason = row.reason or "length"  # the program's budget is never below a row's own limit
      self._finish(job, Result(row.answer, FINISH_REASONS[reason], len(row.ids), n))

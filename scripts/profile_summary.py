"""Where a step's time goes, from a `--profile DIR` trace, without TensorBoard: `python scripts/profile_summary.py DIR`.

    python scripts/benchmark.py --suite train --config demo --mode lora --profile /tmp/prof
    python scripts/profile_summary.py /tmp/prof --top 25

`bench_train --profile` writes a Perfetto trace (`*.trace.json.gz`) beside the XPlane one. This adds up the
device-side events of each compiled op (fusions, dots, copies; on GPU the kernels) over the traced steps and
prints them per step, largest first, grouped by the op's kind (the name without its `.N` suffix). With
`--hlo FILE` (the text of `jitted.lower(...).compile().as_text()`), fusions are named by the JAX
operation they come from instead (`layers_N/mlp/gate_proj/...`), which is how the transposed-write copies
of the CPU backward pass were found (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re

# Host-side and bookkeeping events, not device work.
_SKIP = ("ThunkExecutor", "$", "SlinkyThreadPool", "end:", "PjitFunction", "CommonPjRt", "ParseArguments",
         "np.asarray", "Rendezvous", "Wait", "AllocateOutputBuffers", "Handle input", "InvokeRendezvous")


def load_events(trace_dir: str) -> list[dict]:
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))
  if not paths:
    raise SystemExit(f"no *.trace.json.gz under {trace_dir}: make one with `benchmark.py --suite train --profile DIR`")
  with gzip.open(paths[-1]) as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def hlo_op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name -> the JAX op_name of its metadata (layer numbers folded to layers_N)."""
  names = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    o = re.search(r'op_name="([^"]+)"', line)
    if m and o:
      op = re.sub(r"layers_\d+", "layers_N", o.group(1))
      names[m.group(1)] = re.sub(r"^jit\(\w+\)/(while/body/closed_call/)?", "", op)
  return names


def summarise(events: list[dict], steps: int, op_names: dict[str, str] | None = None) -> list[tuple[str, float, int]]:
  """[(group, ms per step, calls per step)], largest first."""
  ms, calls = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") != "X" or e["name"].startswith(_SKIP):
      continue
    key = (op_names or {}).get(e["name"]) or re.sub(r"\.\d+$", "", e["name"])
    ms[key] += e.get("dur", 0) / 1000
    calls[key] += 1
  return [(k, v / steps, calls[k] // steps) for k, v in ms.most_common()]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("trace_dir")
  p.add_argument("--steps", type=int, default=0, help="steps in the trace (default: read from bench_train's note)")
  p.add_argument("--top", type=int, default=20)
  p.add_argument("--hlo", help="compiled HLO text, to name fusions by their JAX op")
  args = p.parse_args(argv)
  steps = args.steps
  note = os.path.join(args.trace_dir, "steps.txt")
  if not steps and os.path.exists(note):
    steps = int(open(note).read().strip())
  steps = steps or 1
  names = hlo_op_names(open(args.hlo).read()) if args.hlo else None
  rows = summarise(load_events(args.trace_dir), steps, names)
  total = sum(r[1] for r in rows)
  print(f"device time per step: {total:.1f} ms over {len(rows)} op groups ({steps} traced steps; on a CPU with "
        "several XLA devices this is the sum over their threads)")
  for name, t, n in rows[: args.top]:
    print(f"{t:9.2f} ms {100 * t / max(total, 1e-9):5.1f}%  x{n:<4d} {name[:110]}")


if __name__ == "__main__":
  main()

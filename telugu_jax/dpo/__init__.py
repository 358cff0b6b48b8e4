"""Direct preference optimisation after SFT.

records.py (pairs + upstream readers), data.py (encoding, batches), loss.py (DPO/IPO), objective.py (the
train step's objective), train.py (the DPO task on the shared loop), pairs.py (pairs from SFT samples),
evaluate.py (held-out reward report), demo.py (rule-made demo pairs); CLI: `python -m telugu_jax.dpo`.
"""

"""telugu-jax: turn a Telugu LLaMA base model into an instruction-following chatbot, in JAX/Flax.

    import telugu_jax
    loaded = telugu_jax.load_model("runs/demo/sft")   # config, variables (params [+ lora]), tokenizer
"""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy: `import telugu_jax` stays cheap and side-effect free; JAX loads on first use.
  if name in ("load_model", "save_model"):
    from telugu_jax.model import io

    return getattr(io, name)
  raise AttributeError(f"module 'telugu_jax' has no attribute {name!r}")

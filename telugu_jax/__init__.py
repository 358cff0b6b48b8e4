"""telugu-jax: turn a Telugu LLaMA base model into an instruction-following chatbot, in JAX/Flax."""

__version__ = "0.1.0"

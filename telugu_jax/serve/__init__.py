"""Serving: an OpenAI-compatible chat API with a batching queue, a chat page and a rating page.

    python -m telugu_jax.serve --checkpoint runs/demo/sft            # http://127.0.0.1:8000/
"""

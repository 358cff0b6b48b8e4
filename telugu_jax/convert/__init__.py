"""Checkpoint conversion: PyTorch (Hugging Face, Meta, bare state dicts, PEFT adapters) into our model
directory, and back out to Hugging Face and PEFT folders.

    python -m telugu_jax.convert --from SRC --to DST        # PyTorch -> telugu-jax model directory
    python -m telugu_jax.export --checkpoint CKPT --to DST --format hf|peft [--merge]
"""

from telugu_jax.convert.errors import (
    ConfigMismatchError,
    ConversionError,
    ExportError,
    KeyMismatchError,
    ShapeMismatchError,
    UnknownLayoutError,
    UnsafeCheckpointError,
)
from telugu_jax.convert.export import export_hf, export_peft
from telugu_jax.convert.layouts import detect_layout
from telugu_jax.convert.peft_io import import_peft
from telugu_jax.convert.to_orbax import convert

__all__ = ["ConfigMismatchError", "ConversionError", "ExportError", "KeyMismatchError", "ShapeMismatchError",
           "UnknownLayoutError", "UnsafeCheckpointError", "convert", "detect_layout", "export_hf", "export_peft",
           "import_peft"]

"""Errors a user can act on: each message says what is wrong and what to do about it.

The command-line entry points print these messages and exit with status 2 instead of a traceback
(telugu_jax.errors.run_cli).
"""

from __future__ import annotations

from telugu_jax.errors import UserError


class ConversionError(UserError, ValueError):
  """Base class: a checkpoint that cannot be converted or exported as asked."""


class UnknownLayoutError(ConversionError):
  """The source is none of the layouts the converter understands."""


class KeyMismatchError(ConversionError):
  """Checkpoint names without a place in the model, or model weights without a source."""


class ShapeMismatchError(ConversionError):
  """A tensor whose shape is not the one the model expects."""


class ConfigMismatchError(ConversionError):
  """The architecture config and the weights describe different models."""


class UnsafeCheckpointError(ConversionError):
  """A pickle holding more than tensors and plain containers (refused by `weights_only=True`)."""


class ExportError(ConversionError):
  """An export that would not load, or not behave like our model, on the Hugging Face side."""

"""Errors of a training run that the user can fix (bad settings, missing base or data, a diverged loss)."""

from telugu_jax.errors import UserError


class TrainingError(UserError, RuntimeError):
  pass


class TrainingDiverged(TrainingError):
  pass

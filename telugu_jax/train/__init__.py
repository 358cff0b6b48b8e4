"""Supervised fine-tuning (LoRA or full), continued pretraining and DPO: `python -m telugu_jax.train --config ...`.

The public pieces, for a loop of your own (docs/custom_loop.md):
"""

from telugu_jax.train.checkpoint import RunCheckpoints
from telugu_jax.train.core import (
                                   evaluate_dataset,
                                   export_state,
                                   init_state,
                                   jit_steps,
                                   load_base,
                                   make_run_mesh,
                                   restore_state,
                                   to_host,
                                   with_train_settings,
)
from telugu_jax.train.errors import TrainingDiverged, TrainingError
from telugu_jax.train.loop import RunResult, train_and_evaluate
from telugu_jax.train.optim import make_optimizer
from telugu_jax.train.settings import RunSettings
from telugu_jax.train.step import TrainState, create_state, make_steps
from telugu_jax.train.tasks import OBJECTIVES, Datasets, Start, Task, sft_task, task_for

__all__ = ["OBJECTIVES", "Datasets", "RunCheckpoints", "RunResult", "RunSettings", "Start", "Task", "TrainState",
           "TrainingDiverged", "TrainingError", "create_state", "evaluate_dataset", "export_state", "init_state",
           "jit_steps", "load_base", "make_optimizer", "make_run_mesh", "make_steps", "restore_state", "sft_task",
           "task_for", "to_host", "train_and_evaluate", "with_train_settings"]

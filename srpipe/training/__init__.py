"""The train stage: the SR recipe on random crops of the image store, resumable mid-epoch, on one
process or many (DistributedDataParallel).

``loop`` is the loop (set-up, resume, step, validate, save), ``sampling`` the crops and their
order, ``recipe`` losses, schedule and precision, ``state`` what a run is and where it stands,
``runtime`` devices, processes and logs.
"""

from .loop import step_seconds, train
from .recipe import LOSSES, autocast_dtype, lr_lambda
from .state import fingerprint_changes, model_arch

__all__ = ["LOSSES", "autocast_dtype", "fingerprint_changes", "lr_lambda", "model_arch", "step_seconds", "train"]

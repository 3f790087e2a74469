"""Running a training (or ``train=false`` evaluation) job: build everything from the config, fit, record."""

from stn_face.training.run import eval_set_configs, train

__all__ = ["eval_set_configs", "train"]

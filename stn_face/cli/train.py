"""``stn-face-train``: compose the configs, build everything with Hydra, fit, write metrics.json
(:func:`stn_face.training.train`).

Examples::

    stn-face-train experiment=smoke
    stn-face-train transform=affine localization=conv2_fc2 trainer.max_steps=2000
    stn-face-train -m experiment=smoke transform=identity,similarity,affine,projective
"""

from __future__ import annotations

from typing import Any

from stn_face.cli.entry import hydra_command, run_module


@hydra_command("train")
def main(cfg) -> dict[str, Any]:
    from stn_face.training import train
    from stn_face.training.interrupt import exit_on_interrupt

    # a signal while training is a checkpoint and an exit 128 + signal (callbacks.interrupt_checkpoint);
    # Ctrl-C before the first step has nothing to save: one line and exit 130
    with exit_on_interrupt():
        return train(cfg)


if __name__ == "__main__":
    run_module(main)

"""Did the transformer learn to undo the misalignment? Compare its predicted rotation and scale with the
known jitter of every misaligned LFW test crop.

The misalignment study warps LFW crop ``i`` by a jitter drawn from a generator seeded by
``(seed, i)`` (``stn_face/data/jitter.py``), so each image's true rotation and scale are known. A
transformer that re-aligns faces predicts, for each image, a sampling rotation that follows the
jitter's rotation (slope 1 undoes it fully, 0 ignores it); a fixed crop has slope 0. A thin-plate
spline has no matrix: its rotation and scale are read off the best affine fit of its sampling grid.

    python experiments/cpu_celeba/undo_jitter.py logs/cpu_celeba/misaligned/projective [--images 2000]

Writes ``undo_jitter.json`` and ``undo_jitter.png`` (scatter plots) into the run folder, or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stn_face.config import register_resolvers
from stn_face.data.augment import eval_transform
from stn_face.data.images import read_rgb
from stn_face.data.jitter import item_jitter, jitter_image, rotation_of
from stn_face.embedder import FaceEmbedder
from stn_face.geometry import affine_fit, decompose, normalized_grid


def known_jitter(index: int, size: int, jitter: dict) -> tuple[float, float]:
    """Rotation (degrees, ``rotation_of``'s sign) and isotropic scale of item ``index``'s jitter."""
    matrix = item_jitter(index, size, size, **jitter)
    return rotation_of(matrix), math.sqrt(abs(np.linalg.det(matrix[:2, :2])))


def predicted_matrix(transformer, images: torch.Tensor) -> torch.Tensor:
    """The transformer's output-to-input matrices ``(B, 3, 3)``; for ``tps`` (no matrix) the least-squares
    affine summary of where a 9 x 9 grid of output points is sampled from."""
    if transformer.has_matrix:
        return transformer.predict_matrix(images).double()
    grid = normalized_grid(9, 9, dtype=torch.float64)[:, :2]
    params = transformer.predict_params(images).double()
    return affine_fit(grid, transformer.map_points(params, grid))


def fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": float(slope), "intercept": float(intercept), "pearson_r": float(np.corrcoef(x, y)[0, 1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a misalignment-study run folder (with .hydra/ and checkpoints/)")
    parser.add_argument("--images", type=int, default=2000, help="the first N LFW test items")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    register_resolvers()
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    jitter = OmegaConf.to_container(cfg.data.eval_jitter, resolve=True)
    if not jitter:
        raise SystemExit(f"{args.run} was not trained in the misalignment study (data.eval_jitter is empty)")
    eval_set = instantiate(cfg.eval).load().resolve()
    embedder = FaceEmbedder.from_checkpoint(args.run)
    transform = eval_transform(embedder.image_size)

    true_rot, true_scale, pred = [], [], []
    items = eval_set.items[: args.images]
    for start in range(0, len(items), 128):
        batch = []
        for index in range(start, min(start + 128, len(items))):
            image = read_rgb(items[index])
            batch.append(transform(image=jitter_image(image, index, **jitter))["image"])
            rot, scale = known_jitter(index, image.shape[0], jitter)
            true_rot.append(rot)
            true_scale.append(scale)
        with torch.no_grad():
            pred.append(decompose(predicted_matrix(embedder.transformer, torch.stack(batch))))
    pred_rot = np.degrees(torch.cat([p["rotation"] for p in pred]).numpy())
    pred_scale = torch.cat([p["scale"] for p in pred]).numpy()
    true_rot, true_scale = np.asarray(true_rot), np.asarray(true_scale)

    # The jitter J maps the aligned crop to the test image; the transformer's matrix maps its output to
    # its input, so a transformer that undoes the jitter samples through J itself: its rotation follows
    # the jitter's rotation (slope 1) and its scale follows the jitter's scale.
    result = {
        "run": str(args.run), "images": len(items), "jitter": jitter,
        "transform": embedder.transform_name,
        "rotation_deg": {**fit(true_rot, pred_rot), "jitter_std": float(true_rot.std()),
                         "residual_std": float((pred_rot - true_rot).std())},
        "scale": {**fit(true_scale, pred_scale), "jitter_std": float(true_scale.std()),
                  "pred_mean": float(pred_scale.mean())},
    }
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "undo_jitter.json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    r = result["rotation_deg"]
    axes[0].scatter(true_rot, pred_rot, s=3, alpha=0.4)
    axes[0].plot([-30, 30], [-30, 30], "k--", lw=0.8, label="undoes it fully")
    axes[0].set(xlabel="rotation applied to the test crop (deg)", ylabel="rotation the transformer samples (deg)",
                title=f"rotation: slope {r['slope']:.2f}, r = {r['pearson_r']:.2f}")
    axes[0].legend(loc="upper left")
    s = result["scale"]
    axes[1].scatter(true_scale, pred_scale, s=3, alpha=0.4)
    axes[1].set(xlabel="scale applied to the test crop", ylabel="scale the transformer samples",
                title=f"scale: slope {s['slope']:.2f}, r = {s['pearson_r']:.2f}")
    fig.suptitle(f"{embedder.transform_name} transformer on {len(items)} misaligned LFW crops")
    fig.tight_layout()
    fig.savefig(out / "undo_jitter.png", dpi=90)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

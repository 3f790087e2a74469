"""Use a trained model: :class:`FaceEmbedder` turns face crops into embeddings, aligned faces and scores.

Example::

    from stn_face import FaceEmbedder

    embedder = FaceEmbedder.from_checkpoint("logs/train/runs/.../checkpoints/last.ckpt")
    features = embedder.embed_files(["a.jpg", "b.jpg"])        # (2, D), L2-normalised, flip-summed
    score = float(features[0] @ features[1])                   # cosine similarity
    same = embedder.threshold is not None and score >= embedder.threshold

Inputs are **face crops like the training crops** (``stn-face-prepare``'s MTCNN crop: a square of 1.3x
the face box, any size; resized to the checkpoint's ``image_size``). :meth:`FaceEmbedder.crop`
makes such a crop from a raw photo.

A checkpoint rebuilds from its ``model_config`` (:mod:`stn_face.checkpoint`); older checkpoints fall
back to the Hydra run folder's ``.hydra/config.yaml`` beside ``checkpoints/``. Only the spatial
transformer and the backbone are built; the margin head is not needed to embed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stn_face.checkpoint import (
    build_network,
    checkpoint_model_config,
    checkpoint_step,
    load_checkpoint,
    load_weights,
    stored_threshold,
)
from stn_face.data.images import MEAN, STD
from stn_face.nn.embedding import EmbeddingNet, flip_sum

log = logging.getLogger(__name__)

PIXEL_MEAN, PIXEL_STD = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))  # [0, 255] -> [-1, 1]

ImagesLike = Any  # uint8 (H, W, 3) array | list of arrays or paths | float tensor (B, 3, H, W)


# ----------------------------------------------------------------------------------- the embedder
class FaceEmbedder:
    """A trained spatial transformer + backbone in eval mode, ready to embed face crops.

    Build it with :meth:`from_checkpoint`. Attributes: ``image_size`` (the network's input side),
    ``embedding_size``, ``class_names`` (training identities), ``threshold`` (the checkpoint's
    calibrated LFW threshold for flip-summed cosine scores, or None), ``crop_settings`` (the MTCNN crop
    the model was trained on), ``net`` (the :class:`EmbeddingNet`).
    """

    def __init__(self, net: EmbeddingNet, image_size: int = 128, class_names: Sequence[str] = (),
                 threshold: float | None = None, threshold_set: str | None = None,
                 config: dict[str, Any] | None = None, device: str | torch.device = "cpu",
                 checkpoint_path: str | None = None) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        self.image_size = int(image_size)
        self.class_names = list(class_names)
        self.threshold = None if threshold is None else float(threshold)
        self.threshold_set = threshold_set
        self.config = dict(config or {})
        self.checkpoint_path = checkpoint_path
        self.step: int | None = None  # the optimiser step of the checkpoint's weights
        self._detector = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        allowed_targets: Sequence[str] = ("stn_face.",), trust: bool = False) -> FaceEmbedder:
        """Rebuild the network of a ``stn-face-train`` checkpoint (or a run folder's ``last.ckpt``).

        Raises :class:`~stn_face.errors.MissingInputError` (a ``FileNotFoundError``) for a missing file and :class:`~stn_face.errors.CheckpointError`
        for a file that is not a checkpoint or whose weights do not fit its architecture.
        ``allowed_targets``: module prefixes of the classes the stored config may build (your own
        backbone package, say). The file is read as tensors and plain data only; one that names code to
        import is refused (:class:`~stn_face.errors.UntrustedFileError`) unless ``trust=True``, which
        unpickles it in full: **dangerous**, the file can then run any code.
        """
        ckpt = load_checkpoint(path, trust=trust)
        where = ckpt["_path"]
        config = checkpoint_model_config(ckpt, where, allowed_targets)
        net = build_network(config, where, allowed_targets)
        load_weights(net, ckpt["state_dict"], where)
        data_state = ckpt.get("FaceDataModule") or {}
        from stn_face.data.prepare import CropSettings

        image_size = data_state.get("image_size") or config.get("image_size") or CropSettings().size
        threshold, threshold_set = stored_threshold(ckpt)
        embedder = cls(net, image_size=image_size, class_names=data_state.get("class_names") or (),
                       threshold=threshold, threshold_set=threshold_set, config=config, device=device,
                       checkpoint_path=where)
        embedder.step = checkpoint_step(ckpt)
        return embedder

    @classmethod
    def from_pretrained(cls, backbone: dict[str, Any], device: str | torch.device = "cpu",
                        allowed_targets: Sequence[str] = ("stn_face.",)) -> FaceEmbedder:
        """A pretrained backbone alone, no checkpoint and no training (``stn-face-embed backbone=dlib_resnet``).

        ``backbone``: a resolved backbone config (``conf/backbone/*.yaml``) whose ``weights`` name the
        file to read (:func:`stn_face.nn.pretrained.load_pretrained`). There is no spatial transformer:
        crops are resized to the backbone's ``input_size`` and embedded as they are."""
        from hydra.utils import instantiate

        from stn_face.errors import InputError
        from stn_face.nn.pretrained import load_pretrained
        from stn_face.nn.transformer import SpatialTransformer

        target = str(backbone.get("_target_", ""))
        if not target.startswith(tuple(allowed_targets)):
            raise InputError(f"backbone `{target}` is outside {list(allowed_targets)}")
        if not backbone.get("weights"):
            raise InputError("a backbone without a checkpoint needs pretrained weights: pass "
                             "backbone.weights=PATH (or ckpt=PATH for a trained model)")
        net_backbone = load_pretrained(instantiate(backbone))
        size = int(getattr(net_backbone, "input_size", 112))
        # the identity family at scale 1 samples every pixel where it is: the crop as it is
        transformer = SpatialTransformer("identity", output_size=(size, size), input_size=size)
        config = {"transform": {"_target_": "stn_face.nn.SpatialTransformer", "transform": "identity",
                                "output_size": [size, size], "input_size": size},
                  "backbone": dict(backbone), "image_size": size, "crop": None}
        return cls(EmbeddingNet(transformer, net_backbone), image_size=size, config=config, device=device)

    # ------------------------------------------------------------------------------- properties
    @property
    def transformer(self) -> nn.Module:
        return self.net.transformer

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    @property
    def embedding_size(self) -> int:
        return int(self.net.backbone.embedding_size)

    @property
    def transform_name(self) -> str:
        return getattr(self.net.transformer, "transform_name", "unknown")

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(getattr(self.net.transformer, "output_size", (112, 112)))

    @property
    def crop_settings(self) -> dict[str, Any]:
        """The ``stn-face-prepare`` crop settings of the training crops (``mode``, ``size``, ``margin``)."""
        from stn_face.data.prepare import CropSettings

        return dict(self.config.get("crop") or CropSettings().to_dict())

    def __repr__(self) -> str:
        return (f"FaceEmbedder({self.transform_name} transform, {type(self.backbone).__name__} backbone, "
                f"{self.image_size}px -> {self.embedding_size}-d, threshold={self.threshold})")

    # -------------------------------------------------------------------------------- inputs
    def preprocess(self, images: ImagesLike) -> torch.Tensor:
        """Any accepted input -> a normalised float batch ``(B, 3, S, S)`` on the embedder's device.

        uint8 RGB arrays (``(H, W, 3)``, ``(N, H, W, 3)`` or a list, of any size; grayscale ``(H, W)``
        too) and image file paths are resized to ``S = image_size`` with area averaging and mapped to
        [-1, 1], exactly as the evaluation crops in training. A float tensor ``(B, 3, H, W)`` is taken
        as already normalised (resized bilinearly when ``H, W`` differ from ``S``).
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"expected a normalised float tensor (B, 3, H, W), got shape {tuple(images.shape)}")
            if not images.is_floating_point():
                raise ValueError("a tensor input must be float, normalised like training ((x / 255 - 0.5) / 0.5); "
                                 "pass uint8 images as numpy arrays")
            batch = images.to(self.device, torch.float32)
            if batch.shape[-2:] != (self.image_size, self.image_size):
                batch = F.interpolate(batch, size=(self.image_size, self.image_size), mode="bilinear",
                                      align_corners=False, antialias=True)
            return batch
        from stn_face.data.augment import eval_batch

        if _is_pixel_batch(images):  # (B, H, W, 3) uint8 as it is: a slice of a pixel pack, say
            return eval_batch(images, self.image_size).to(self.device)
        arrays = _as_array_list(images)
        if not arrays:
            return torch.zeros(0, 3, self.image_size, self.image_size, device=self.device)
        return eval_batch(arrays, self.image_size).to(self.device)

    # ---------------------------------------------------------------------------------- embed
    @torch.inference_mode()
    def _features(self, batch: torch.Tensor, flip: bool) -> torch.Tensor:
        return flip_sum(self.net, batch) if flip else F.normalize(self.net(batch))

    def embed(self, images: ImagesLike, flip: bool = True, batch_size: int = 64, progress: bool = False):
        """L2-normalised embeddings. With ``flip`` (the paper's test feature): normalise(emb(image)) +
        normalise(emb(mirror image)), normalised again.

        Returns a numpy ``float32`` array ``(N, D)`` for arrays / lists, ``(D,)`` for one ``(H, W, 3)``
        array, and a CPU float tensor ``(B, D)`` for a tensor input. A ``(N, H, W, 3)`` uint8 array (a
        memory-mapped pixel pack, :mod:`stn_face.data.pixel_pack`) is read one batch at a time.
        """
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
        if isinstance(images, torch.Tensor):
            outputs = [self._features(self.preprocess(chunk), flip).cpu() for chunk in images.split(batch_size)]
            return torch.cat(outputs) if outputs else torch.zeros(0, self.embedding_size)
        arrays = images if _is_pixel_batch(images) else _as_array_list(images)
        outputs = []
        bar = _progress(len(arrays), "embedding", progress)
        try:
            for start in range(0, len(arrays), batch_size):
                chunk = arrays[start:start + batch_size]
                outputs.append(self._features(self.preprocess(chunk), flip).cpu().numpy())
                bar.update(len(chunk))
        finally:
            bar.close()
        result = np.concatenate(outputs) if outputs else np.zeros((0, self.embedding_size), np.float32)
        result = result.astype(np.float32, copy=False)
        return result[0] if single else result

    def embed_files(self, paths: Iterable[str | os.PathLike], batch_size: int = 64, progress: bool = True,
                    flip: bool = True, skip_errors: bool = False, pixel_cache: str | os.PathLike | None = None):
        """Embed image files (face crops) in batches; returns ``(N, D)`` float32.

        An unreadable file raises :class:`~stn_face.data.images.ImageReadError`; with ``skip_errors`` it
        is left out and the result is ``(embeddings, failed)``, ``failed`` mapping each left-out path
        to the reason (rows of ``embeddings`` follow the remaining paths in order).

        ``pixel_cache``: a folder for the files' decoded pixels (:mod:`stn_face.data.pixel_pack`): the
        first call decodes them into a pack there, later calls on the same unchanged files read the pack
        instead of decoding JPEGs again. The same embeddings either way.
        """
        from stn_face.data.images import ImageReadError, read_rgb

        paths = [Path(p) for p in paths]
        if pixel_cache is not None:
            if skip_errors:
                raise ValueError("embed_files: pixel_cache packs every file, so skip_errors cannot leave "
                                 "unreadable ones out; pass one or the other")
            from stn_face.data.pixel_pack import cached_pixels

            pixels = cached_pixels(paths, self.image_size, pixel_cache, progress)
            if pixels is not None:
                return self.embed(pixels, flip=flip, batch_size=batch_size, progress=progress)
        failed: dict[str, str] = {}
        outputs = []
        bar = _progress(len(paths), "embedding", progress)
        try:
            for start in range(0, len(paths), batch_size):
                images = []
                for path in paths[start:start + batch_size]:
                    try:
                        images.append(read_rgb(path))
                    except ImageReadError as error:
                        if not skip_errors:
                            raise
                        failed[str(path)] = error.reason
                if images:
                    outputs.append(self.embed(images, flip=flip, batch_size=batch_size))
                bar.update(min(batch_size, len(paths) - start))
        finally:
            bar.close()
        result = np.concatenate(outputs) if outputs else np.zeros((0, self.embedding_size), np.float32)
        return (result, failed) if skip_errors else result

    # ---------------------------------------------------------------------------------- align
    @torch.inference_mode()
    def align(self, images: ImagesLike, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """The aligned faces the backbone sees, as uint8 RGB ``(N, h, w, 3)`` (``(h, w, 3)`` for one
        array), and the transforms: output-to-input matrices ``(N, 3, 3)`` in normalised coordinates for
        the linear families (:mod:`stn_face.geometry`; ``stn_face.geometry.corners`` gives the sampled
        quadrilateral), the control points' input positions ``(N, 2 K²)`` for ``tps``
        (``stn_face.evaluation.alignment.sampled_outline`` draws either)."""
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
        if isinstance(images, torch.Tensor):
            chunks = list(images.split(batch_size))
        else:
            arrays = _as_array_list(images)
            chunks = [arrays[i:i + batch_size] for i in range(0, len(arrays), batch_size)]
        faces, matrices = [], []
        for chunk in chunks:
            aligned, matrix = self.net.transformer(self.preprocess(chunk))
            pixels = (aligned * PIXEL_STD.to(aligned) + PIXEL_MEAN.to(aligned)) * 255.0
            pixels = pixels.clamp(0, 255).round().to(torch.uint8)
            faces.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
            matrices.append(matrix.float().cpu().numpy())
        height, width = self.output_size
        faces_arr = np.concatenate(faces) if faces else np.zeros((0, height, width, 3), np.uint8)
        matrix_arr = np.concatenate(matrices) if matrices else np.zeros((0, 3, 3), np.float32)
        return (faces_arr[0], matrix_arr[0]) if single else (faces_arr, matrix_arr)

    # -------------------------------------------------------------------------------- compare
    def compare(self, a: ImagesLike, b: ImagesLike, flip: bool = True) -> tuple[float, bool | None]:
        """Cosine score of two face crops and the decision at :attr:`threshold` (None without one)."""
        features = self.embed([_one(a), _one(b)], flip=flip)
        score = float(np.dot(features[0], features[1]))
        return score, (None if self.threshold is None else score >= self.threshold)

    # ------------------------------------------------------------------------------ raw photos
    def crop(self, photo: np.ndarray | str | os.PathLike) -> tuple[np.ndarray, str]:
        """The training crop of the face in a raw photo (MTCNN, largest face, :attr:`crop_settings`),
        JPEG round-tripped like the cached crops; and its status: ``detected`` or ``fallback_center``
        (no face found: the centre of the photo)."""
        from stn_face.data.detect import MTCNNDetector
        from stn_face.data.images import read_rgb
        from stn_face.data.prepare import CropSettings, crop_photo, jpeg_roundtrip

        image = read_rgb(photo) if isinstance(photo, (str, os.PathLike)) else np.ascontiguousarray(photo)
        settings, _ = CropSettings.split(self.crop_settings)  # a data config's crop block may hold more
        if self._detector is None:
            self._detector = MTCNNDetector()
        crop, status, _ = crop_photo(image, settings, self._detector)
        return jpeg_roundtrip(crop, settings.jpeg_quality), status


# ------------------------------------------------------------------------------------- helpers
def _one(image: ImagesLike) -> np.ndarray:
    arrays = _as_array_list(image)
    if len(arrays) != 1:
        raise ValueError(f"expected one image, got {len(arrays)}")
    return arrays[0]


def _is_pixel_batch(images: ImagesLike) -> bool:
    """A ``(N, H, W, 3)`` uint8 array, used as it is (no per-image list)."""
    return (isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3
            and images.dtype == np.uint8)


def _as_array_list(images: ImagesLike) -> list[np.ndarray]:
    """uint8 RGB arrays from one array, a stacked batch, or a list of arrays / file paths."""
    from stn_face.data.images import read_rgb

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            images = [images]
        elif images.ndim == 4:
            images = list(images)
        else:
            raise ValueError(f"expected uint8 images (H, W, 3) or (N, H, W, 3), got shape {images.shape}")
    result = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            image = read_rgb(image)
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images, got dtype {image.dtype}; pass a normalised float "
                             "tensor (B, 3, H, W) for float input")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        result.append(np.ascontiguousarray(image))
    return result


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img")


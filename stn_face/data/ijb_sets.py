"""IJB-B / IJB-C 1:1 template verification (``eval=ijb``), as the field computes it.

The release (``IJB_release/IJBB`` or ``IJB_release/IJBC``, the layout insightface's arcface_torch
reads) holds ``loose_crop/`` images and three meta files per variant ``v`` (``ijbb`` or ``ijbc``):

- ``meta/{v}_face_tid_mid.txt``: one line per face image, ``image template_id media_id``;
- ``meta/{v}_template_pair_label.txt``: one line per pair, ``template_id template_id label`` (1 same);
- ``meta/{v}_name_5pts_score.txt``: ``image x1 y1 ... x5 y5 score``, five points and a detector score.

A template's feature is the sum over its media (a photo, or the frames of one video) of the mean
over each media's images, L2-normalised (the direction of the mean over media of media means); a pair's score is the cosine of its two templates' features,
and the result is the ROC with TAR at FAR 1e-6 ... 1e-1 (:data:`IJB_FARS`). Images are aligned with
the dataset's five points (``align=landmarks``: insightface's 5-point template) or cropped by MTCNN
(``align=mtcnn``: the crops learned alignment trains on). ``detector_score_weighting`` multiplies each
image's feature by its detector score first (arcface_torch's option). The exact protocol, and where
this differs from arcface_torch (unit-length flip-sum image features), is in ``docs/protocol.md``.

Pairs are kept as arrays: the IJB-C protocol has about 15.7 million of them.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stn_face.data.eval_sets import VerificationSet, clean_name, register_protocol
from stn_face.data.protocols import MissingImagesError, Pair, ProtocolFormatError
from stn_face.errors import InputError, MissingInputError
from stn_face.files import check_relative_path, contained_path

log = logging.getLogger(__name__)

VARIANTS = {"ijbb": "IJBB", "ijbc": "IJBC"}
ALIGNMENTS = ("mtcnn", "landmarks")
IJB_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: the largest meta file read (IJB-C's pair file is about 190 MB)
MAX_META_BYTES = 2 * 2**30


# ------------------------------------------------------------------------------------ the meta files
def meta_files(root: str | Path, variant: str) -> dict[str, Path]:
    """The three meta files and the image folder of ``variant`` under ``root``: the release folder that
    holds ``IJBB/`` and ``IJBC/``, or one variant's folder itself."""
    if variant not in VARIANTS:
        raise InputError(f"eval.variant={variant!r} is not an IJB variant; use one of {', '.join(VARIANTS)}")
    root = Path(root).expanduser()
    base = root / VARIANTS[variant] if (root / VARIANTS[variant]).is_dir() else root
    meta = base / "meta"
    return {"tid_mid": meta / f"{variant}_face_tid_mid.txt",
            "pairs": meta / f"{variant}_template_pair_label.txt",
            "landmarks": meta / f"{variant}_name_5pts_score.txt",
            "images": base / "loose_crop"}


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise MissingInputError(f"IJB {what} not found: {path}; pass eval.root=DIR (the folder holding "
                                f"IJBB/ and IJBC/, each with meta/ and loose_crop/) and eval.variant=ijbb|ijbc")
    size = path.stat().st_size
    if size > MAX_META_BYTES:
        raise ProtocolFormatError(f"{path} holds {size} bytes, more than any IJB {what}: not a {what}")
    data = path.read_bytes()
    if not data.strip():
        raise ProtocolFormatError(f"{path} is empty: not an IJB {what}")
    if b"\0" in data:
        raise ProtocolFormatError(f"{path} holds NUL bytes: a binary file, not an IJB {what}")
    return data


def _first_bad_line(data: bytes, fields: int, kinds: str) -> tuple[int, str]:
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != fields:
            return number, line
        try:
            [int(p) if k == "i" else float(p) for p, k in zip(parts, kinds) if k != "s"]
        except ValueError:
            return number, line
    return 0, ""


def read_template_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``{v}_template_pair_label.txt`` -> template ids ``(P,)``, ``(P,)`` and labels ``(P,)`` bool."""
    path = Path(path)
    data = _read_bytes(path, "template pair file")
    lines = sum(1 for line in data.splitlines() if line.strip())
    try:
        with warnings.catch_warnings():  # numpy warns where it stops at a token that is not a number
            warnings.simplefilter("ignore", DeprecationWarning)
            numbers = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")
    except (ValueError, UnicodeDecodeError):
        numbers = np.zeros(0, np.int64)
    if numbers.size != 3 * lines:
        number, line = _first_bad_line(data, 3, "iii")
        raise ProtocolFormatError(f"{path}, line {number}: {line.strip()[:80]!r} is not `template template label` "
                                  "(three integers): not an IJB template pair file")
    numbers = numbers.reshape(-1, 3)
    if not np.isin(numbers[:, 2], (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(numbers[:, 2], (0, 1)))[0])
        raise ProtocolFormatError(f"{path}, pair {bad + 1}: label {numbers[bad, 2]} is neither 0 nor 1")
    return numbers[:, 0], numbers[:, 1], numbers[:, 2].astype(bool)


def _meta_rows(path: Path, what: str, fields: int, form: str, parse):
    """``(line number, parse(parts))`` for every non-blank line of a meta file of ``fields`` fields; a
    line of another count, or one ``parse`` rejects (``ValueError``), is one error naming the line."""
    for number, line in enumerate(_read_bytes(path, what).decode("utf-8", "replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != fields:
                raise ValueError
            parsed = parse(parts)
        except ValueError:
            raise ProtocolFormatError(f"{path}, line {number}: {line.strip()[:80]!r} is not `{form}`: not an "
                                      f"IJB {what}") from None
        yield number, parsed


def read_face_tid_mid(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``{v}_face_tid_mid.txt`` -> image names (relative to ``loose_crop/``), template ids ``(N,)`` and
    media ids ``(N,)``. A name that would leave the image folder is refused."""
    path = Path(path)
    rows = [row for _, row in _meta_rows(path, "face_tid_mid file", 3, "image template_id media_id",
                                         lambda parts: (parts[0], int(parts[1]), int(parts[2])))]
    names = [check_relative_path(name, f"image name in {path.name}") for name, _, _ in rows]
    return (names, np.asarray([t for _, t, _ in rows], np.int64), np.asarray([m for _, _, m in rows], np.int64))


def read_landmarks(path: str | Path) -> dict[str, tuple[np.ndarray, float]]:
    """``{v}_name_5pts_score.txt`` -> image name -> (five points ``(5, 2)`` float32 ``(x, y)``, score)."""
    path = Path(path)
    found = {}
    for number, (name, values) in _meta_rows(path, "5-point file", 12, "image x1 y1 ... x5 y5 score",
                                             lambda parts: (parts[0], np.asarray(parts[1:], dtype=np.float64))):
        if not np.isfinite(values).all():
            raise ProtocolFormatError(f"{path}, line {number}: a point or score is not a finite number")
        found[name] = (values[:10].reshape(5, 2).astype(np.float32), float(values[10]))
    return found


# ------------------------------------------------------------------------------------- the protocol
class TemplatePairs(Sequence):
    """Template pairs backed by arrays (left, right template ids and labels, all ``(P,)``), read as
    :class:`Pair` objects (fold 0) only where a caller iterates them."""

    def __init__(self, left: np.ndarray, right: np.ndarray, same: np.ndarray) -> None:
        self.left, self.right, self.same = left, right, same

    def __len__(self) -> int:
        return len(self.left)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return TemplatePairs(self.left[index], self.right[index], self.same[index])
        return Pair(str(self.left[index]), str(self.right[index]), bool(self.same[index]), 0)

    def __iter__(self) -> Iterator[Pair]:
        for left, right, same in zip(self.left.tolist(), self.right.tolist(), self.same.tolist()):
            yield Pair(str(left), str(right), bool(same), 0)


@register_protocol("ijb")
@dataclass
class IJBTemplateSet(VerificationSet):
    """IJB-B / IJB-C 1:1 verification over templates (see the module docstring).

    ``root``: the release folder (holding ``IJBB/``, ``IJBC/``) or one variant's folder; ``variant``:
    ``ijbb`` or ``ijbc``; ``align``: ``mtcnn`` (the model's own MTCNN crop) or ``landmarks`` (the
    dataset's five points, insightface's template, at the model's crop size); ``max_pairs_per_fold``
    keeps the first same and different pairs (quick checks); ``allow_missing`` drops missing images
    from their templates and skips the pairs of templates left empty.
    """

    root: str = ""
    variant: str = "ijbc"
    align: str = "mtcnn"
    detector_score_weighting: bool = False
    template_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), init=False)

    group_noun: ClassVar[str] = "templates"
    fars: ClassVar[tuple[float, ...]] = IJB_FARS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.align not in ALIGNMENTS:
            raise InputError(f"eval.align={self.align!r} is not an IJB alignment; use one of {', '.join(ALIGNMENTS)}")
        if self.variant not in VARIANTS:
            raise InputError(f"eval.variant={self.variant!r} is not an IJB variant; use one of {', '.join(VARIANTS)}")
        self._images: dict[int, list[tuple[str, int]]] = {}
        self._scores: dict[str, float] = {}
        self._item_keys: list[tuple[str, int]] = []

    # ----------------------------------------------------------------- files named by root/variant
    @classmethod
    def resolve_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        files = meta_files(options.get("root") or ".", str(options.get("variant", "ijbc")))
        options = dict(options)
        if not options.get("pairs_file"):
            options["pairs_file"] = str(files["pairs"])
        if not options.get("image_root"):
            options["image_root"] = str(files["images"])
        return options

    @classmethod
    def missing_file_hint(cls, options: dict[str, Any]) -> str:
        return (f"IJB template pair file not found: {options.get('pairs_file')}; pass eval.root=DIR (the folder "
                "holding IJBB/ and IJBC/, as released, each with meta/ and loose_crop/) and eval.variant=ijbb|ijbc")

    def _meta(self) -> dict[str, Path]:
        meta = Path(self.pairs_file).parent
        return {"tid_mid": meta / f"{self.variant}_face_tid_mid.txt",
                "landmarks": meta / f"{self.variant}_name_5pts_score.txt"}

    # ----------------------------------------------------------------------------- the steps
    def read_pairs(self) -> TemplatePairs:
        left, right, same = read_template_pairs(self.pairs_file)
        return TemplatePairs(left, right, same)

    def protocol_pairs(self) -> TemplatePairs:
        pairs = self.read_pairs()
        if self.max_pairs_per_fold is not None:
            keep = np.zeros(len(pairs), bool)
            for label in (True, False):
                keep[np.flatnonzero(pairs.same == label)[:self.max_pairs_per_fold]] = True
            pairs = TemplatePairs(pairs.left[keep], pairs.right[keep], pairs.same[keep])
        return pairs

    def _template_images(self, pairs: TemplatePairs) -> dict[int, list[tuple[str, int]]]:
        """Template id -> its (image name, media id) in file order, for the templates ``pairs`` name."""
        names, tids, mids = read_face_tid_mid(self._meta()["tid_mid"])
        wanted = set(np.unique(np.concatenate([pairs.left, pairs.right])).tolist())
        images: dict[int, list[tuple[str, int]]] = {}
        for name, tid, mid in zip(names, tids.tolist(), mids.tolist()):
            if tid in wanted:
                images.setdefault(tid, []).append((name, mid))
        unknown = sorted(wanted - set(images))
        if unknown:
            raise ProtocolFormatError(f"{self.pairs_file} names {len(unknown)} templates that "
                                      f"{self._meta()['tid_mid'].name} does not list (first: {unknown[:3]})")
        return images

    def _detector_scores(self) -> dict[str, float]:
        return {n: s for n, (_, s) in read_landmarks(self._meta()["landmarks"]).items()}

    def load(self) -> IJBTemplateSet:
        pairs = self.protocol_pairs()
        images = self._template_images(pairs)
        needed = list(dict.fromkeys(name for tid in images for name, _ in images[tid]))
        # names were checked as relative paths when read; the image folder itself may be a symlinked copy
        missing = {n for n in needed if not (Path(self.image_root) / n).is_file()}
        if missing and not self.allow_missing:
            first = sorted(missing)[:3]
            raise MissingImagesError(f"{len(missing)} of {len(needed)} IJB images are missing under "
                                     f"{self.image_root} (first: {', '.join(first)}). To fix: point eval.root at "
                                     "the full release, or pass eval.allow_missing=true")
        if missing:
            images = {t: [(n, m) for n, m in v if n not in missing] for t, v in images.items()}
            log.warning("%s: %d of %d images missing under %s are left out of their templates", self.name,
                        len(missing), len(needed), self.image_root)
        self._images = images
        if self.detector_score_weighting:
            self._scores = self._detector_scores()
            lacking = [n for n in needed if n not in self._scores and n not in missing]
            if lacking:
                raise ProtocolFormatError(f"{self._meta()['landmarks']} has no detector score for {len(lacking)} "
                                          f"images (first: {lacking[:3]}); detector_score_weighting needs one each")
        self.sources = [n for n, _ in self._set_template_pairs(pairs, lambda t: self._images.get(t, []))]
        return self

    def _set_template_pairs(self, pairs: TemplatePairs, members) -> list[tuple[Any, int]]:
        """Use the pairs whose two templates have items; set groups, item_group and the items' media."""
        has_items = {t for t in np.unique(np.concatenate([pairs.left, pairs.right])).tolist() if members(t)}
        keep = np.array([a in has_items and b in has_items for a, b in zip(pairs.left.tolist(), pairs.right.tolist())],
                        dtype=bool)
        self.skipped_pairs = int((~keep).sum())
        if self.skipped_pairs:
            log.warning("%s: %d of %d pairs skipped: a template has no image", self.name, self.skipped_pairs, len(pairs))
        if not keep.any():
            raise ValueError(f"{self.name}: no pair of {self.pairs_file} can be scored")
        self.pairs = TemplatePairs(pairs.left[keep], pairs.right[keep], pairs.same[keep])
        order = np.stack([self.pairs.left, self.pairs.right], axis=1).ravel()
        _, first = np.unique(order, return_index=True)
        self.template_ids = order[np.sort(first)]
        self.groups = [str(t) for t in self.template_ids.tolist()]
        items, item_group = [], []
        for index, tid in enumerate(self.template_ids.tolist()):
            for item in members(tid):
                items.append(item)
                item_group.append(index)
        self.item_group = np.asarray(item_group, np.int64)
        self._item_keys = [(item[0], item[1]) if isinstance(item, tuple) else ("", 0) for item in items]
        return items

    def members(self, group: str) -> list[str]:
        return [name for name, _ in self._images.get(int(group), [])]

    def use_embeddings(self, names: Sequence[str], source: str) -> list[int]:
        """Rows of an embeddings file whose names are IJB image names (``1.jpg``)."""
        pairs = self.protocol_pairs()
        if not self._images:  # the templates from the meta file; no image file is needed
            self._images = self._template_images(pairs)
            if self.detector_score_weighting:
                self._scores = self._detector_scores()
        row = {}
        for index, name in enumerate(names):
            row.setdefault(clean_name(name), index)
        present = {t: [(row[n], m, n) for n, m in v if n in row] for t, v in self._images.items()}
        absent = sum(1 for v in self._images.values() for n, _ in v if n not in row)
        if absent and not self.allow_missing:
            from stn_face.data.eval_sets import MissingEmbeddingsError

            raise MissingEmbeddingsError(f"{absent} IJB images of the scored templates have no embedding in {source}; "
                                         "names must be image names like 1.jpg, or pass eval.allow_missing=true")
        items = self._set_template_pairs(pairs, lambda t: present.get(t, []))
        self._item_keys = [(n, m) for _, m, n in items]
        return [r for r, _, _ in items]

    def item_weights(self) -> np.ndarray:
        """Each item's weight in its template's sum: 1 / (images of its media in the template), times its
        detector score with ``detector_score_weighting`` (so the sum is the template's sum of media means)."""
        counts: dict[tuple[int, int], int] = {}
        keys = [(int(g), m) for g, (_, m) in zip(self.item_group.tolist(), self._item_keys)]
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        weights = np.array([1.0 / counts[k] for k in keys])
        if self.detector_score_weighting:
            weights *= np.array([self._scores[name] for name, _ in self._item_keys])
        return weights

    def check_training_identities(self, training_names) -> IJBTemplateSet:
        """IJB's meta files name no people (templates only): nothing to compare; recorded as not checked."""
        self.pairs_with_training_identities = None
        return self

    def pair_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = {t: i for i, t in enumerate(self.template_ids.tolist())}
        left = np.fromiter((index[t] for t in self.pairs.left.tolist()), np.int64, len(self.pairs))
        right = np.fromiter((index[t] for t in self.pairs.right.tolist()), np.int64, len(self.pairs))
        return np.stack([left, right], axis=1), self.pairs.same.copy(), np.zeros(len(self.pairs), np.int64)

    # ------------------------------------------------------------------------------- alignment
    def _crop_key(self, name: str) -> str:
        """An image's path for the MTCNN preparation, which takes photos inside a folder: the release's
        ``loose_crop/`` is that folder, so ``1.jpg`` is prepared as ``loose_crop/1.jpg``."""
        return f"{Path(self.image_root).name}/{name}"

    def prepare(self, crop: dict[str, Any], workers: int = 2, progress: bool = True) -> None:
        from stn_face.data.prepare import CropSettings, prepare_collection

        settings, options = CropSettings.split(crop)
        if self.align == "mtcnn":
            files = [self._crop_key(n) for n in dict.fromkeys(self.sources)]
            prepare_collection(Path(self.image_root).parent, self.prepared_root, settings, files=files,
                               workers=workers, progress=progress, replace_stale=True, **options)
            return
        settings = dataclasses.replace(settings, mode="landmarks")
        landmarks = read_landmarks(self._meta()["landmarks"])
        unique = list(dict.fromkeys(self.sources))
        lacking = [n for n in unique if n not in landmarks]
        if lacking:
            raise ProtocolFormatError(f"{self._meta()['landmarks']} has no five points for {len(lacking)} images "
                                      f"(first: {lacking[:3]}); use eval.align=mtcnn to detect them instead")
        write_landmark_crops(self.image_root, self._landmark_dir(settings.size), unique, landmarks, settings, progress)

    def _landmark_dir(self, size: int) -> Path:
        return Path(self.prepared_root) / f"landmarks{size}"

    def resolve(self) -> IJBTemplateSet:
        if self.align == "mtcnn":
            from stn_face.data.prepare import crop_path_map

            crops = crop_path_map(self.prepared_root)
            missing = [n for n in self.sources if self._crop_key(n) not in crops]
            if missing:
                raise MissingInputError(f"{self.name}: {len(missing)} of {len(self.sources)} images have no prepared "
                                        f"crop in {self.prepared_root} (first: {missing[:3]}); see its manifest.csv")
            self.items = [crops[self._crop_key(n)] for n in self.sources]
            return self
        folders = sorted(Path(self.prepared_root).glob("landmarks*"))
        if not folders:
            raise MissingInputError(f"{self.name}: no landmark crops under {self.prepared_root}; run prepare first")
        folder = folders[-1] if len(folders) == 1 else max(folders, key=lambda p: p.stat().st_mtime)
        items = [contained_path(folder, n, "IJB image name") for n in self.sources]
        missing = [str(p) for p in items if not p.is_file()]
        if missing:
            raise MissingInputError(f"{self.name}: {len(missing)} landmark crops are missing (first: {missing[:3]})")
        self.items = items
        return self


def write_landmark_crops(image_root: str | Path, out_dir: Path, names: list[str],
                         landmarks: dict[str, tuple[np.ndarray, float]], settings: Any, progress: bool) -> None:
    """Align each image with its five points (insightface's template at ``settings.size``) into
    ``out_dir/<name>`` as JPEG; files already there are kept (a cache keyed by the crop size)."""
    from stn_face.data.detect import Detection
    from stn_face.data.images import read_rgb
    from stn_face.data.prepare.crop import encode_jpeg, face_crop
    from stn_face.files import atomic_write

    todo = [n for n in names if not contained_path(out_dir, n, "IJB image name").is_file()]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="IJB landmark crops", unit="img")
    for name in todo:
        points, score = landmarks[name]
        x1, y1 = points.min(axis=0)
        x2, y2 = points.max(axis=0)
        face = Detection((float(x1), float(y1), float(x2), float(y2)), score, points)
        crop = face_crop(read_rgb(Path(image_root) / check_relative_path(name, "IJB image name")), face, settings)
        with atomic_write(contained_path(out_dir, name, "IJB image name"), "wb", fsync=False) as handle:
            handle.write(encode_jpeg(crop, settings.jpeg_quality))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

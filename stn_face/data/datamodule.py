"""The LightningDataModule: prepared face crops for training, verification sets for validation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler

from stn_face.data.augment import eval_transform, train_transform
from stn_face.data.datasets import (
    FaceImageDataset,
    LabelledImages,
    RecordImageDataset,
    check_packed_options,
    scan_identity_folders,
)
from stn_face.data.eval_sets import VerificationSet
from stn_face.data.sampling import ResumableShuffleSampler
from stn_face.errors import InputError, MissingInputError

log = logging.getLogger(__name__)


class FaceDataModule(L.LightningDataModule):
    """Training crops in ``root/<identity>/<image>`` plus verification sets for validation/test.

    When ``raw_root`` is given, :meth:`prepare_data` first runs the MTCNN preparation from
    ``raw_root`` into ``root`` (cached and resumable; ``crop`` holds its settings, ``people_file``
    restricts it to the identities an LFW people list names, ``identities`` to an explicit list). ``root`` may also be a folder the user
    prepared beforehand with ``stn-face-prepare``. Labels are indices into ``class_names`` (saved in
    checkpoints).

    ``source="rec"`` trains from an insightface packed set instead: ``path`` holds ``train.rec``,
    ``train.idx`` and ``property`` (:class:`~stn_face.data.datasets.RecordImageDataset`, its frames
    checked at ``check_records`` places when opened); the augmentation, sampler and DDP sharding are the same.
    """

    def __init__(
        self,
        root: str | None = None,
        raw_root: str | None = None,
        crop: dict[str, Any] | None = None,
        people_file: str | None = None,
        identities: Sequence[str] | None = None,
        min_images_per_identity: int = 1,
        max_identities: int | None = None,
        max_images_per_identity: int | None = None,
        image_size: int = 128,
        batch_size: int = 128,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        prepare_workers: int = 2,
        augment: dict[str, Any] | None = None,
        eval_sets: Sequence[VerificationSet] = (),
        pin_memory: bool = False,
        seed: int = 0,
        name: str = "faces",
        eval_jitter: dict[str, Any] | None = None,
        source: str = "folder",
        path: str | None = None,
        check_records: int = 1000,
    ) -> None:
        super().__init__()
        if source not in ("folder", "rec"):
            raise InputError(f"data.source={source} is unknown; use folder (identity folders) or rec (train.rec)")
        self.source = source
        self.path = path
        self.check_records = check_records
        self.name = name
        self.root = Path(root or path or ".")
        self.raw_root = Path(raw_root) if raw_root else None
        self.crop = dict(crop or {})
        self.people_file = people_file
        self.identities = list(identities) if identities else None
        self.min_images_per_identity = min_images_per_identity
        self.max_identities = max_identities
        self.max_images_per_identity = max_images_per_identity
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.prepare_workers = prepare_workers
        self.augment = dict(augment or {})
        self.eval_sets = list(eval_sets)
        self._prepared: dict[str, bool] = {}  # the parts prepared in this process (prepare_data)
        self.pin_memory = pin_memory
        # deterministic per-image geometric jitter of the evaluation crops (stn_face.data.jitter)
        self.eval_jitter = dict(eval_jitter) if eval_jitter else None
        self.seed = seed
        self.class_names: list[str] = []
        self.train_set: LabelledImages | None = None
        self.eval_datasets: list[FaceImageDataset] = []

    # ------------------------------------------------------------------------------------ preparing
    def _identities(self) -> list[str] | None:
        if self.identities is not None:
            return self.identities[: self.max_identities] if self.max_identities else self.identities
        if not self.people_file:
            return None
        from stn_face.data.protocols import read_people

        names = sorted(p.name for p in read_people(self.people_file) if p.count >= self.min_images_per_identity)
        return names[: self.max_identities] if self.max_identities else names

    def _raw_files(self) -> list[str] | None:
        identities = self._identities()
        if identities is None or self.raw_root is None:
            return None
        files = []
        for name in identities:
            folder = self.raw_root / name
            if folder.is_dir():
                images = [f"{name}/{p.name}" for p in sorted(folder.iterdir()) if p.is_file()]
                files += images[: self.max_images_per_identity] if self.max_images_per_identity else images
        return files

    def prepare_data(self) -> None:
        """Run MTCNN preparation of the training photos (when the trainer fits, or outside a trainer) and of
        every verification set (rank 0 only). Each part is prepared once per process: the training job
        prepares before it builds the model (the class count) and Lightning's ``prepare_data`` asks again;
        ``train=false`` (``trainer.validate``) prepares the verification sets only."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn in (None, "fit"):
            self.prepare_train_data()
        self.prepare_eval_data()

    def prepare_train_data(self) -> None:
        if self._prepared.get("train"):
            return
        self._prepare_train_data()
        self._prepared["train"] = True

    def prepare_eval_data(self) -> None:
        if self._prepared.get("eval"):
            return
        for eval_set in self.eval_sets:
            eval_set.load().prepare(self.crop, workers=self.prepare_workers)
        self._prepared["eval"] = True

    def _prepare_train_data(self) -> None:
        if self.raw_root is None and not Path(self.root).is_dir():
            # a prepared folder that is not there: say so now, before the evaluation sets are prepared
            scan_identity_folders(self.root, self.min_images_per_identity)
        if self.raw_root is not None:
            if not self.raw_root.is_dir():
                from stn_face.paths import HOW_TO_GET_DATA

                raise MissingInputError(f"raw training photos not found at {self.raw_root}. {HOW_TO_GET_DATA}")
            from stn_face.data.prepare import CropSettings, prepare_collection

            settings, options = CropSettings.split(self.crop)
            prepare_collection(self.raw_root, self.root, settings, files=self._raw_files(),
                               workers=self.prepare_workers, replace_stale=True, **options)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None and self.source == "rec":
            check_packed_options(self.path, {"raw_root": self.raw_root, "people_file": self.people_file,
                                             "identities": self.identities, "max_identities": self.max_identities,
                                             "max_images_per_identity": self.max_images_per_identity,
                                             "min_images_per_identity": self.min_images_per_identity})
            self.train_set = RecordImageDataset(self.path, train_transform(self.image_size, **self.augment),
                                                self.check_records)
            self.class_names = self.train_set.class_names
            log.info("%s: %d training images of %d identities from %s", self.name, len(self.train_set),
                     len(self.class_names), self.train_set.packed.records.rec_path)
        if stage in (None, "fit") and self.train_set is None:
            samples, self.class_names = scan_identity_folders(
                self.root, self.min_images_per_identity, identities=self._identities(),
                max_identities=self.max_identities, max_images_per_identity=self.max_images_per_identity)
            aug = train_transform(self.image_size, **self.augment)
            self.train_set = FaceImageDataset([s.path for s in samples], [s.label for s in samples], aug)
            log.info("%s: %d training images of %d identities from %s", self.name, len(samples),
                     len(self.class_names), self.root)
        if not self.eval_datasets and self.eval_sets:
            transform = eval_transform(self.image_size)
            for eval_set in self.eval_sets:
                if not eval_set.pairs:
                    eval_set.load()
                if self.class_names:  # never score the training people silently (VerificationSet docs)
                    eval_set.check_training_identities(self.class_names)
                eval_set.resolve()
                if self.eval_jitter:
                    from stn_face.data.jitter import JitteredFaceDataset

                    self.eval_datasets.append(
                        JitteredFaceDataset(eval_set.items, None, transform, self.eval_jitter))
                else:
                    self.eval_datasets.append(FaceImageDataset(eval_set.items, None, transform))

    @property
    def num_classes(self) -> int:
        if not self.class_names:
            self.setup("fit")
        return len(self.class_names)

    # ---------------------------------------------------------------------------------- dataloaders
    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches whose order and augmentation depend only on ``seed``, epoch and position,
        sharded across DDP ranks; a resumed run continues mid-epoch where the checkpoint was taken."""
        assert self.train_set is not None, "call setup('fit') first"
        rank, world_size = self._ranks()
        trainer = getattr(self, "trainer", None)
        step = trainer.global_step if trainer is not None else 0
        sampler = ResumableShuffleSampler(len(self.train_set), self.batch_size, seed=self.seed, rank=rank,
                                          world_size=world_size)
        sampler.start_epoch, sampler.start_batch = divmod(step, sampler.batches_per_epoch)
        sampler.epoch = sampler.start_epoch
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per verification set; under DDP each rank embeds an interleaved share (the
        sampler pads with repeats, which the verification callback drops by index)."""
        rank, world_size = self._ranks()
        loaders = []
        for dataset in self.eval_datasets:
            sampler = (DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
                       if world_size > 1 else None)
            loaders.append(DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, shuffle=False,
                                      num_workers=self.num_workers, pin_memory=self.pin_memory,
                                      persistent_workers=self.num_workers > 0))
        return loaders

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    # ---------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "image_size": self.image_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("class_names", [])
        if self.class_names and saved and saved != self.class_names:
            raise ValueError(
                f"the checkpoint was trained on {len(saved)} identities that differ from the "
                f"{len(self.class_names)} found in {self.root}; resume with the same training data"
            )
        self.class_names = list(saved) or self.class_names

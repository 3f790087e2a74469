"""The FaceDataModule on an identity folder: classes, datasets, loaders and the checkpoint state."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn_face.data.datamodule import FaceDataModule
from stn_face.errors import InputError


@pytest.fixture
def faces(tmp_path: Path, write_faces) -> Path:
    return write_faces(tmp_path / "faces", {"alice": 4, "bob": 4, "carol": 1})


def test_setup_builds_the_training_set_and_its_loader(faces: Path) -> None:
    module = FaceDataModule(root=str(faces), min_images_per_identity=2, image_size=16, batch_size=4, num_workers=0)
    assert module.num_classes == 2 and module.class_names == ["alice", "bob"]
    images, labels = next(iter(module.train_dataloader()))
    assert tuple(images.shape) == (4, 3, 16, 16) and set(labels.tolist()) <= {0, 1}
    assert module.val_dataloader() == []  # no verification set given


def test_checkpoint_state_keeps_the_identities(faces: Path) -> None:
    module = FaceDataModule(root=str(faces), min_images_per_identity=2, image_size=16, num_workers=0)
    module.setup("fit")
    state = module.state_dict()
    assert state == {"class_names": ["alice", "bob"], "image_size": 16}
    fresh = FaceDataModule(root=str(faces), image_size=16)
    fresh.load_state_dict(state)
    assert fresh.class_names == ["alice", "bob"]
    other = FaceDataModule(root=str(faces), min_images_per_identity=1, image_size=16, num_workers=0)
    other.setup("fit")  # three identities now
    with pytest.raises(ValueError, match="same training data"):
        other.load_state_dict(state)


def test_unknown_source_is_an_input_error(faces: Path) -> None:
    with pytest.raises(InputError, match=r"data\.source=zip"):
        FaceDataModule(root=str(faces), source="zip")


class _EvalSet:
    def __init__(self) -> None:
        self.prepared = 0

    def load(self):
        return self

    def prepare(self, crop, workers) -> None:
        self.prepared += 1


def test_prepare_data_does_each_part_once_and_under_validate_only_the_evaluation_sets(faces, monkeypatch):
    """train=false (trainer.validate) touches no training photo; the training job's own call and Lightning's
    second one prepare once."""
    from types import SimpleNamespace

    trained: list[bool] = []
    monkeypatch.setattr(FaceDataModule, "_prepare_train_data", lambda self: trained.append(True))
    eval_set = _EvalSet()
    module = FaceDataModule(root=str(faces), eval_sets=[eval_set], num_workers=0)
    module.trainer = SimpleNamespace(state=SimpleNamespace(fn="validate"))
    module.prepare_eval_data()
    module.prepare_data()  # what Lightning's trainer.validate calls
    assert trained == [] and eval_set.prepared == 1
    fitting = FaceDataModule(root=str(faces), eval_sets=[eval_set], num_workers=0)
    fitting.prepare_data()  # the training job, before it builds the model
    fitting.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    fitting.prepare_data()  # Lightning's trainer.fit
    assert trained == [True] and eval_set.prepared == 2

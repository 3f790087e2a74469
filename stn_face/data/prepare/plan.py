"""Planning: which files of the input folder are photos to prepare, of which identity, under which
output name; which are skipped and why. Pure bookkeeping on paths: no image is opened here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from stn_face.data.prepare.settings import PrepareError

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


@dataclass(frozen=True)
class Task:
    """One photo to prepare."""

    source: str  # relative to the input root, "/"-separated
    identity: str
    path: str  # absolute source path
    output: str  # relative to the output root
    output_root: str


@dataclass
class Plan:
    candidates: list[tuple[str, str]] = field(default_factory=list)  # (source, identity)
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (identity, reason)
    ignored_root_files: int = 0


def output_name(source: str) -> str:
    """Relative crop path for a relative source path (JPEG names kept, others get ``.jpg`` appended)."""
    return source if PurePosixPath(source).suffix.lower() in (".jpg", ".jpeg") else source + ".jpg"


def read_identity_list(spec: str | os.PathLike | Sequence[str] | None) -> set[str]:
    """Identity names from a list, or from a file: the first word of each line; blank lines, ``#``
    comments and purely numeric lines (the counts heading LFW's people files) are ignored."""
    if spec is None:
        return set()
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PrepareError(f"exclude_identities file {path} not found; pass a file with one identity "
                               "name per line, or a list like exclude_identities=[name1,name2]")
        names = set()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if words and not words[0].isdigit():
                names.add(words[0])
        return names
    return {str(name) for name in spec}


def _visible(name: str) -> bool:
    return not name.startswith(".")


def check_paths(input_dir: Path, output_dir: Path, files: Sequence[Any] | None) -> None:
    """Refuse input and output folders that cannot work, naming the fix."""
    if not input_dir.exists():
        raise PrepareError(f"input folder {input_dir} does not exist; pass input=DIR, a folder of "
                           "<identity>/<image> subfolders")
    if not input_dir.is_dir():
        raise PrepareError(f"input {input_dir} is not a folder; pass input=DIR, a folder of "
                           "<identity>/<image> subfolders")
    if output_dir.exists() and not output_dir.is_dir():
        raise PrepareError(f"output {output_dir} exists and is not a folder; pass output=DIR, a new or "
                           "earlier output folder")
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise PrepareError(f"output folder {output_dir} lies inside the input folder {input_dir}; choose "
                           "an output folder outside the input")
    if output_dir in input_dir.parents:
        raise PrepareError(f"output folder {output_dir} contains the input folder {input_dir}; choose an "
                           "output folder that does not hold the input")
    if files is None and not any(e.is_dir() and _visible(e.name) for e in os.scandir(input_dir)):
        raise PrepareError(f"input folder {input_dir} holds no identity folders; expected "
                           f"{input_dir}/<identity>/<image>.jpg")


def _scan_input(input_dir: Path) -> tuple[list[str], int]:
    """All visible files below the identity folders (relative, sorted) and the number of ignored
    root-level files."""
    sources: list[str] = []
    ignored = 0
    for entry in sorted(os.scandir(input_dir), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        if not entry.is_dir():
            ignored += 1
            continue
        for folder, dirs, names in os.walk(entry.path):
            dirs[:] = sorted(d for d in dirs if _visible(d))
            rel = Path(folder).relative_to(input_dir).as_posix()
            sources.extend(f"{rel}/{n}" for n in sorted(names) if _visible(n))
    return sources, ignored


def _normalise_source(source: str | os.PathLike) -> str:
    text = str(source).replace(os.sep, "/")
    parts = PurePosixPath(text).parts
    if not parts or text.startswith("/") or ".." in parts:
        raise PrepareError(f"files entry {source!r} must be a path relative to the input folder, "
                           "like Person_Name/Person_Name_0001.jpg")
    return "/".join(p for p in parts if p != ".")


def make_plan(input_dir: Path, files: Sequence[str | os.PathLike] | None, extensions: Sequence[str],
              min_images: int, max_images: int | None, excluded: set[str]) -> Plan:
    """Sort every file into a candidate (source, identity) or a skipped one with its reason; the
    identity filters count the candidate files, before any detection."""
    plan = Plan()
    if files is None:
        sources, plan.ignored_root_files = _scan_input(input_dir)
        explicit = False
    else:
        sources = sorted({_normalise_source(f) for f in files})
        explicit = True
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    per_identity: dict[str, list[str]] = {}
    for source in sources:
        parts = source.split("/")
        identity = parts[0] if len(parts) > 1 else ""
        if not identity:
            plan.skipped[source] = ("", "skipped: not inside an identity folder")
        elif not explicit and PurePosixPath(source).suffix.lower() not in exts:
            plan.skipped[source] = (identity, "skipped: extension not in extensions")
        elif identity in excluded:
            plan.skipped[source] = (identity, "skipped: excluded identity")
        else:
            per_identity.setdefault(identity, []).append(source)
    for identity, members in per_identity.items():
        if len(members) < min_images:
            for source in members:
                reason = f"skipped: identity has {len(members)} < min_images_per_identity={min_images} images"
                plan.skipped[source] = (identity, reason)
            continue
        keep = members[:max_images] if max_images else members
        for source in members[len(keep):]:
            plan.skipped[source] = (identity, f"skipped: beyond max_images_per_identity={max_images}")
        plan.candidates.extend((source, identity) for source in keep)
    plan.candidates.sort()
    return plan

"""Section ``recordio``: read throughput of one DataLoader worker, a packed ``.rec`` (``data=rec``) against
the folder of JPEG crops it was packed from (``data=folder``).

One worker's work is measured in this process (``num_workers=0``: what each worker process does, without
the hand-over): items of the training datasets the FaceDataModule builds, each decoded and put through the
training augmentation at the data config's image size, in the sampler's shuffled order. The two sources
are read in alternating rounds (rotating which goes first) and medians reported: images/s (wall clock)
and CPU ms per image (``time.process_time``). Both read from the page cache after the first round; on
network storage, where one open per file costs a round trip, the packed file gains far more than here.

``python -m benchmarks.recordio [--crops DIR] [--images N] [--rounds N]`` runs it alone;
:func:`bench_recordio` is what the suite calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Budget, clock, compose, machine_info, median, resolve_crops, since

DEFAULT_IMAGES = 512
DEFAULT_ROUNDS = 5


def _datasets(crops: Path, pack: Path):
    """The training datasets of ``data=folder`` (the crops) and ``data=rec`` (their pack), as configured in
    conf/data, both at the .rec config's image size so they do the same work per image."""
    from hydra.utils import instantiate

    image_size = int(compose(["data=rec"]).data.image_size)
    built = {}
    for name, overrides in (("folder", ["data=folder", f"data.root={crops}", "data.min_images_per_identity=1"]),
                            ("rec", ["data=rec", f"data.path={pack}"])):
        cfg = compose([*overrides, f"data.image_size={image_size}", "data.num_workers=0"])
        module = instantiate(cfg.data, _partial_=True)(eval_sets=[])
        module.setup("fit")
        built[name] = module.train_set
    return built, image_size


def bench_recordio(args, crops: Path, budget: Budget) -> dict[str, Any]:
    """``{"folder": {...}, "rec": {...}, "rec_over_folder_images_per_s": ..., ...}`` for ``args.recordio_images``
    items per round, ``args.rounds`` rounds (defaults when the suite's args lack them)."""
    import torch

    from stn_face.data.pack import pack_folders

    images = int(getattr(args, "recordio_images", DEFAULT_IMAGES))
    rounds = int(getattr(args, "rounds", DEFAULT_ROUNDS))
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        start = clock()
        summary = pack_folders(crops, Path(tmp) / "pack")
        pack_s = since(start)[0]
        datasets, image_size = _datasets(crops, Path(tmp) / "pack")
        count = min(images, len(datasets["rec"]))
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(datasets["rec"]), generator=generator)[:count].tolist()
        readers = {"folder": lambda i: datasets["folder"].paths[i].read_bytes(),
                   "rec": lambda i: datasets["rec"].packed.records.read(int(datasets["rec"].packed.keys[i])).payload}
        timings = {f"{name}{part}": {"wall": [], "cpu": []} for name in datasets for part in ("", "_bytes")}
        names = list(datasets)
        for round_index in range(rounds):
            if round_index and budget.left() < 0:
                break
            for name in names[round_index % 2:] + names[: round_index % 2]:  # rotate who goes first
                dataset, read = datasets[name], readers[name]
                jobs = ((f"{name}_bytes", lambda i, _, read=read: read(i)),
                        (name, lambda i, p, dataset=dataset: dataset[(i, p)]))
                for key, work in jobs:
                    start = clock()
                    for position, index in enumerate(order):
                        work(index, position)
                    wall, cpu = since(start)
                    timings[key]["wall"].append(wall)
                    timings[key]["cpu"].append(cpu)
        result: dict[str, Any] = {
            "images_per_round": count, "rounds": len(timings["rec"]["wall"]), "image_size": image_size,
            "pack": {"images": summary.images, "identities": summary.identities, "mib": summary.bytes / 2**20,
                     "seconds": pack_s},
        }
        for name, values in timings.items():
            wall, cpu = median(values["wall"]), median(values["cpu"])
            result[name] = {"images_per_s": _ratio(count, wall), "cpu_ms_per_image": 1000 * cpu / count,
                            "wall_s": values["wall"], "cpu_s": values["cpu"]}
        for part in ("", "_bytes"):
            rec, folder = result[f"rec{part}"], result[f"folder{part}"]
            result[f"rec_over_folder{part}_images_per_s"] = _ratio(rec["images_per_s"], folder["images_per_s"])
            result[f"rec_over_folder{part}_cpu_per_image"] = _ratio(rec["cpu_ms_per_image"], folder["cpu_ms_per_image"])
    return result


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(result: dict[str, Any]) -> str:
    rows = [f"read throughput per DataLoader worker ({result['images_per_round']} shuffled training items a "
            f"round, median of {result['rounds']} rounds)",
            f"{'source':<22}{'what':<34}{'images/s':>10}{'CPU ms/image':>14}"]
    size = result["image_size"]
    for part, what in (("", f"decode + augmentation at {size}x{size}"), ("_bytes", "encoded bytes only")):
        for name, label in (("folder", "folder of JPEGs"), ("rec", "data=rec (train.rec)")):
            row = result[f"{name}{part}"]
            rows.append(f"{label:<22}{what:<34}{row['images_per_s']:>10.0f}{row['cpu_ms_per_image']:>14.3f}")
        speed = f"x{result[f'rec_over_folder{part}_images_per_s']:.2f}"
        cpu = f"x{result[f'rec_over_folder{part}_cpu_per_image']:.2f}"
        rows.append(f"{'':<22}{'rec / folder':<34}{speed:>10}{cpu:>14}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.recordio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", default=None, help="prepared <identity>/<image> crops (default: the cached "
                        "LFW crops, as the suite reads)")
    parser.add_argument("--images", dest="recordio_images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the suite's default)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        crops, source = resolve_crops(args.crops, Path(tmp))
        result = {"machine": machine_info(), "crops": source, "recordio": bench_recordio(args, crops, Budget(30.0))}
    print(table(result["recordio"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

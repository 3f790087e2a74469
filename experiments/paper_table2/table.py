"""The landmark-regression Table 2 from the JSON files of ``regress.py``, beside the paper's numbers.

    python experiments/paper_table2/table.py experiments/paper_table2/results

Prints a markdown table (mean ± population std over seeds, per-seed values; the ranking by the mean)
and writes it to
``table.md`` beside the results, with ``table.csv`` (one row per run).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

# Tang et al., Optik 2020, Table 2: final MSE of each localization setting regressing the landmarks
PAPER_MSE = {"conv1_fc1": 0.005213, "conv2_fc1": 0.004795, "conv3_fc1": 0.004659,
             "conv2_fc2": 0.005169, "conv3_fc2": 0.004635}
LABELS = {"conv1_fc1": "1 conv + 1 FC", "conv2_fc1": "2 conv + 1 FC", "conv3_fc1": "3 conv + 1 FC",
          "conv2_fc2": "2 conv + 2 FC", "conv3_fc2": "3 conv + 2 FC"}


def _mean_std(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _ranking(means: dict[str, float]) -> str:
    return " < ".join(sorted(means, key=means.get))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="folder of <setting>_seed<n>.json files")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
    by_setting: dict[str, list[dict]] = {}
    for run in runs:
        by_setting.setdefault(run["localization"], []).append(run)
    settings = [s for s in PAPER_MSE if s in by_setting]

    lines = ["| setting | paper MSE | ours: MSE, grid coords [-1, 1] (mean ± std) | per seed 42, 43, 44 (grid) | "
             "ours: MSE, unit coords [0, 1] | RMSE (px of 128) | params | train wall (s) | train CPU (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    ours: dict[str, float] = {}
    for setting in settings:
        group = sorted(by_setting[setting], key=lambda r: r["seed"])
        unit = [r["held_out_mse"]["unit"] for r in group]
        grid = [r["held_out_mse"]["grid"] for r in group]
        ours[setting] = float(np.mean(grid))
        lines.append(
            f"| {setting} ({LABELS[setting]}) | {PAPER_MSE[setting]:.6f} | {_mean_std(grid, 6)} | "
            f"{', '.join(f'{v:.6f}' for v in grid)} | {_mean_std(unit, 6)} | "
            f"{np.mean([r['held_out_rmse_crop_pixels'] for r in group]):.2f} | {group[0]['parameters']:,} | "
            f"{_mean_std([r['train_time_s'] for r in group], 0)} | "
            f"{_mean_std([r['train_cpu_time_s'] for r in group], 0)} |")
    baseline = sorted({round(r["mean_shape_baseline_mse"]["grid"], 8) for r in runs})
    lines += ["", f"Mean-shape baseline (predict the training mean of every landmark) on the held-out "
              f"identities: MSE {', '.join(f'{b:.6f}' for b in baseline)} in grid coordinates "
              f"({', '.join(f'{b / 4:.6f}' for b in baseline)} in unit coordinates).",
              "", f"Ranking, lowest MSE first: ours {_ranking(ours)}; "
              f"paper {_ranking({s: PAPER_MSE[s] for s in settings})}."]
    text = "\n".join(lines) + "\n"
    print(text)
    (args.results / "table.md").write_text(text)
    with open(args.results / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "seed", "held_out_mse_unit", "held_out_mse_grid", "baseline_mse_unit",
                         "train_batch_mse_unit", "steps", "train_time_s", "train_cpu_time_s", "cpu", "command"])
        for run in sorted(runs, key=lambda r: (list(PAPER_MSE).index(r["localization"]), r["seed"])):
            writer.writerow([run["localization"], run["seed"], f"{run['held_out_mse']['unit']:.6f}",
                             f"{run['held_out_mse']['grid']:.6f}", f"{run['mean_shape_baseline_mse']['unit']:.6f}",
                             f"{run['train_batch_mse_last_steps']['unit']:.6f}", run["steps"], run["train_time_s"],
                             run["train_cpu_time_s"],
                             f"{run['machine']['cpu']}, {run['machine']['logical_cpus']} cores, "
                             f"{run['machine']['torch_cpu_capability']}", run["command"]])


if __name__ == "__main__":
    main()

"""The results row papers print: one column per benchmark, in the field's order and names.

Pair-accuracy sets (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, ...) report the 10-fold accuracy in %;
template sets (IJB-B, IJB-C) report TAR at FAR 1e-4 in %, as arcface_torch, AdaFace and CVLface
tables do. A set is named by its ``eval`` name (``lfw``, ``cfp_fp``, ``agedb_30``: the ``.bin`` file
stems; ``ijbb``, ``ijbc``); unknown names keep their own name and come after the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: eval name -> column title, in the order papers print them
COLUMNS = {"lfw": "LFW", "lfw_view1": "LFW View 1 (dev)", "cfp_fp": "CFP-FP", "cfp_ff": "CFP-FF",
           "agedb_30": "AgeDB-30", "calfw": "CALFW", "cplfw": "CPLFW", "vgg2_fp": "VGG2-FP", "ytf": "YTF",
           "ijbb": "IJB-B", "ijbc": "IJB-C"}
#: the FAR whose TAR stands for a template set
TEMPLATE_FAR = "1e-4"


def cell(metrics: Mapping[str, Any]) -> str:
    """One set's figure in %: TAR at FAR 1e-4 for a set reporting TAR at 1e-4 (IJB), else accuracy."""
    tar = (metrics.get("tar_at_far") or {})
    if TEMPLATE_FAR in tar:
        value = tar[TEMPLATE_FAR]
        measurable = ((metrics.get("tar_at_far_measurable") or {}).get(TEMPLATE_FAR) or {}).get("pooled", True)
        return "n/a" if value is None else f"{100 * value:.2f}" + ("" if measurable else " (not measurable)")
    accuracy = metrics.get("accuracy_mean")
    return "n/a" if accuracy is None else f"{100 * accuracy:.2f}"


def paper_table(sets: Mapping[str, Mapping[str, Any]], label: str = "model") -> str:
    """A Markdown table with one row (``label``) and one column per set, in :data:`COLUMNS` order."""
    names = sorted(sets, key=lambda n: (list(COLUMNS).index(n) if n in COLUMNS else len(COLUMNS), n))
    titles = [COLUMNS.get(n, n) + (" (TAR@FAR=1e-4)" if TEMPLATE_FAR in (sets[n].get("tar_at_far") or {}) else "")
              for n in names]
    header = "| " + " | ".join(["", *titles]) + " |"
    rule = "|" + "---|" * (len(names) + 1)
    row = "| " + " | ".join([label, *(cell(sets[n]) for n in names)]) + " |"
    return "\n".join([header, rule, row])

"""Evaluation: verification protocol metrics (numpy only), ROC plots and the results report.

Import the submodules directly: ``stn_face.evaluation.verification`` (no torch, no matplotlib),
``stn_face.evaluation.plots`` (matplotlib) and ``stn_face.evaluation.report``.
"""

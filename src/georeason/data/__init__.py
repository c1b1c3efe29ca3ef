"""Datasets, preprocessing and the synthetic benchmark of georeason.

Implements SPEC 2 (data layouts and preprocessing); see docs/data.md. Submodules are imported on use.
"""

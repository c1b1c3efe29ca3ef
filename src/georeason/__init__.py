"""georeason: geospatial pixel reasoning (SegEarth-R1) on a modern, CPU-friendly stack.

The package implements the model of Li et al., "SegEarth-R1: Geospatial Pixel Reasoning via Large
Language Model" (Sec. 4), its data pipeline, evaluation protocol, GeoTIFF inference and tooling.
"""

__version__ = "0.1.0"

from georeason.errors import GeoreasonError

__all__ = ["GeoreasonError", "__version__"]

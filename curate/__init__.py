"""curate: grounded, reproducible image-ROI-text triplets and VQA from public medical data."""

__version__ = "0.1.0"

# bump when per-unit processing changes so that cached work units are redone
PIPELINE_VERSION = "2"

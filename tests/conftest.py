from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe YAML with the given sources (and extra sections) and return its path."""

    def _write(sources: list[dict], **extra) -> Path:
        recipe = {"name": "t", "seed": 0, "salt": "test", "sources": sources, **extra}
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return _write


@pytest.fixture
def mask_folder(tmp_path) -> Path:
    """A local folder of grey PNG images with masks, one of them corrupt."""
    root = tmp_path / "local"
    (root / "img").mkdir(parents=True)
    (root / "seg").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = (rng.normal(100, 20, (64, 80))).clip(0, 255).astype(np.uint8)
        mask = np.zeros((64, 80), np.uint8)
        mask[10:20, 50:70] = 1  # right of the image
        img[mask == 1] = 220
        Image.fromarray(img).save(root / "img" / f"p{i}.png")
        Image.fromarray(mask).save(root / "seg" / f"p{i}_seg.png")
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def tree_bytes(path: Path) -> dict[str, bytes]:
    """A file's bytes, or every file under a folder (e.g. manifest.parquet/ parts) by name."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}

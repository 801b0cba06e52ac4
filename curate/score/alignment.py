"""A trained bundled-model run as a quality score: image-caption alignment per sample.

`curate train` writes a run folder; `curate.train.model.load_run` loads it and
`alignment_scores(model, images, texts)` gives the cosine similarity of each image's
and its text's embeddings (-1..1). A caption that does not describe its image (shuffled,
wrong side, another organ) scores low, and `filters.min_scores: {alignment: X}` drops it
with the reason. Scores are cached per (run identity, image hash, caption), so a re-run
or a resumed build recomputes none, and a different checkpoint recomputes all.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from curate.describe.backends.cache import AnswerCache
from curate.ingest.base import content_fingerprint
from curate.model.errors import ConfigError
from curate.model.recipe import AlignmentConfig


def run_identity(run_dir: str | Path) -> str:
    """A fingerprint of what `load_run` reads (the config and the weights): a new
    checkpoint under the same path is a new identity; metrics, eval results and optimizer
    state written beside it are not part of it."""
    from curate.train.model import CONFIG_FILE, WEIGHTS_FILE

    root = Path(run_dir)
    files = [root / CONFIG_FILE, root / WEIGHTS_FILE]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"score.alignment.run: {root} is not a trained run ({', '.join(missing)} "
                          "missing); train one with `curate train DIR --out RUN`")
    ident = [(f.name, content_fingerprint(f)) for f in files]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def decode_image(png: bytes) -> np.ndarray:
    """A stored view (8- or 16-bit grey, RGB) as uint8 HxW or HxWx3."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        if im.mode in ("I;16", "I;16B", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            return ((arr - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8)
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)


class AlignmentScorer:
    """One actor's model: loaded once (`setup` on first use), scores rows in batches."""

    def __init__(self, cfg: AlignmentConfig, run_dir: str, cache_dir: str | None):
        self.cfg, self.run_dir = cfg, run_dir
        self.identity = run_identity(run_dir)
        self.cache = AnswerCache(cache_dir)
        self.model = None
        self.stats = {"samples": 0, "cache_hits": 0, "computed": 0}

    def setup(self) -> None:
        if self.model is not None:
            return
        import torch

        from curate.train.model import load_run

        if self.cfg.num_gpus and not torch.cuda.is_available():
            raise ConfigError("score.alignment asks for a GPU (num_gpus) and this worker "
                              "has none; set num_gpus: 0 to score on CPU")
        self.model, _ = load_run(self.run_dir, device="cuda" if self.cfg.num_gpus else "cpu")

    def key(self, row: dict[str, Any]) -> str:
        blob = json.dumps([self.identity, row["image_sha256"], row["caption"] or ""])
        return hashlib.sha256(blob.encode()).hexdigest()

    def score_rows(self, rows: list[dict[str, Any]]) -> list[float]:
        """Alignment of each row's image (`image` PNG bytes) and caption, in row order."""
        out: list[float | None] = [None] * len(rows)
        todo = []
        for i, row in enumerate(rows):
            hit = self.cache.get(self.key(row))
            if hit is not None and isinstance(hit.get("alignment"), int | float):
                out[i] = float(hit["alignment"])
                self.stats["cache_hits"] += 1
            else:
                todo.append(i)
        self.stats["samples"] += len(rows)
        if todo:
            self.setup()
            from curate.train.model import alignment_scores

            step = self.cfg.batch_size
            for a in range(0, len(todo), step):
                idx = todo[a:a + step]
                images = [decode_image(rows[i]["image"]) for i in idx]
                texts = [rows[i]["caption"] or "" for i in idx]
                values = np.asarray(alignment_scores(self.model, images, texts, step),
                                    dtype=np.float64).reshape(-1)
                if values.shape[0] != len(idx) or not np.all(np.isfinite(values)):
                    raise ConfigError(f"the run at {self.run_dir} gave {values.shape[0]} "
                                      f"scores for {len(idx)} samples (or non-finite ones)")
                for i, v in zip(idx, values.tolist(), strict=True):
                    out[i] = round(float(v), 6)
                    self.cache.put(self.key(rows[i]), {"alignment": out[i],
                                                       "run": self.identity})
            self.stats["computed"] += len(todo)
            self.cache.flush()
        return [float(v) for v in out]  # type: ignore[arg-type]

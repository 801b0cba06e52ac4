"""The bundled reference model: a compact medical image-text model.

    image (C, H, W) -> MONAI 2D ResNet -> feature map -> pooled -> projection -> image embedding
    text            -> frozen MiniLM sentence vector (cached) -> MLP projection -> text embedding
    CLIP-style symmetric contrastive loss between the two (texts that are equal count as
    positives of each other: phantom and template captions repeat), and an ROI head that
    predicts the normalised box (x0, y0, x1, y1) of the region a phrase names from the
    pooled feature grid (reduced to a few channels), conditioned on the phrase's text vector (FiLM).

The text encoder is frozen, so its vectors depend only on the string and are cached per
process; only the projection learns. Images are resized (stretched, not padded) to one
square size, so normalised boxes (`bbox_norm`) stay valid unchanged.

Public API (the build-time quality scorer relies on it):
    save_run(model, config, run_dir)
    load_run(run_dir, device="cpu") -> (model, config)          # eval mode
    alignment_scores(model, images, texts) -> np.ndarray        # cosine per (image, text) pair
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curate.model.errors import CurateError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


class ModelConfig(BaseModel):
    """The bundled model's shape. `tiny` trains on a laptop CPU; `base`/`large` are for GPUs."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(64, ge=16, le=1024, description="images are resized to SxS")
    width: int = Field(16, ge=4, description="channels of the first ResNet stage (x2 per stage)")
    layers: tuple[int, int, int, int] = Field((1, 1, 1, 1), description="ResNet blocks per stage")
    block: Literal["basic", "bottleneck"] = "basic"
    embed_dim: int = Field(128, ge=8, description="joint image-text embedding size")
    text_encoder: str = Field("minilm", description="a curate.kb.embed spec: minilm, hashing:DIM "
                              "or a local sentence-transformers folder")
    text_dim: int = Field(384, description="size of the text encoder's vectors")
    roi_grid: int = Field(4, ge=1, description="the feature map is pooled to GxG for the ROI head")
    roi_channels: int = Field(32, ge=1, description="channels the ROI head reduces the map to")
    roi_hidden: int = Field(256, ge=8)
    init_temperature: float = Field(0.07, gt=0)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "base": {"image_size": 224, "width": 64, "layers": (2, 2, 2, 2), "embed_dim": 256,
             "roi_grid": 7, "roi_channels": 64, "roi_hidden": 512},
    "large": {"image_size": 384, "width": 64, "layers": (3, 4, 6, 3), "block": "bottleneck",
              "embed_dim": 512, "roi_grid": 7, "roi_channels": 64, "roi_hidden": 1024},
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise CurateError(f"unknown model preset {name!r}: choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


class TextEncoder:
    """A frozen sentence encoder with a bounded per-process cache of its vectors."""

    def __init__(self, spec: str, max_cached: int = 20000):
        from curate.kb.embed import get_embedder

        self.embedder = get_embedder(spec)
        self.dim = int(self.embedder.dim)
        self.max_cached = max_cached
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vec in zip(missing, self.embedder.embed_documents(missing), strict=True):
                self._cache[text] = vec
        out = np.stack([self._cache[t] for t in texts]) if texts else \
            np.zeros((0, self.dim), np.float32)
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return out


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the train extra
        from curate.model.errors import MissingDependency
        raise MissingDependency("torch") from exc
    return torch


def build_model(config: ModelConfig, text_encoder: TextEncoder | None = None):
    """A fresh model (random weights) for `config`; loads the text encoder unless given."""
    torch = _torch()
    from monai.networks.nets import ResNet

    nn = torch.nn
    text_encoder = text_encoder or TextEncoder(config.text_encoder)
    if text_encoder.dim != config.text_dim:
        raise CurateError(f"text encoder {config.text_encoder} gives {text_encoder.dim}-d vectors, "
                          f"config says text_dim={config.text_dim}")

    class ImageTextModel(nn.Module):
        def __init__(self):
            super().__init__()
            w = config.width
            self.backbone = ResNet(config.block, list(config.layers), [w, 2 * w, 4 * w, 8 * w],
                                   spatial_dims=2, n_input_channels=3, conv1_t_size=7,
                                   conv1_t_stride=2, num_classes=1, feed_forward=False)
            feat = 8 * w * (4 if config.block == "bottleneck" else 1)
            d, t, g, h = config.embed_dim, config.text_dim, config.roi_grid, config.roi_hidden
            self.image_proj = nn.Sequential(nn.Linear(feat, feat), nn.GELU(), nn.Linear(feat, d))
            self.text_proj = nn.Sequential(nn.Linear(t, t), nn.GELU(), nn.Linear(t, d))
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
            self.roi_reduce = nn.Conv2d(feat, config.roi_channels, 1)
            self.roi_pool = nn.AdaptiveAvgPool2d(g)
            self.roi_in = nn.Linear(config.roi_channels * g * g, h)
            self.roi_film = nn.Linear(t, 2 * h)
            self.roi_out = nn.Sequential(nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 4))
            self.text_encoder = text_encoder  # not a module: frozen, never saved with weights
            self.image_size = config.image_size

        def feature_map(self, images):
            b = self.backbone
            x = b.act(b.bn1(b.conv1(images)))
            if not b.no_max_pool:
                x = b.maxpool(x)
            return b.layer4(b.layer3(b.layer2(b.layer1(x))))

        def embed_images(self, fmap):
            return nn.functional.normalize(self.image_proj(fmap.mean(dim=(2, 3))), dim=-1)

        def embed_texts(self, text_vectors):
            return nn.functional.normalize(self.text_proj(text_vectors), dim=-1)

        def predict_boxes(self, fmap, phrase_vectors):
            """(B, 4) boxes x0, y0, x1, y1 in [0, 1] (x0 <= x1, y0 <= y1)."""
            h = self.roi_in(self.roi_pool(self.roi_reduce(fmap)).flatten(1))
            scale, shift = self.roi_film(phrase_vectors).chunk(2, dim=-1)
            cx, cy, bw, bh = torch.sigmoid(self.roi_out(h * (1 + scale) + shift)).unbind(-1)
            return torch.stack([(cx - bw / 2).clamp(0, 1), (cy - bh / 2).clamp(0, 1),
                                (cx + bw / 2).clamp(0, 1), (cy + bh / 2).clamp(0, 1)], dim=-1)

        def forward(self, images, text_vectors, phrase_vectors):
            """Image embeddings, text embeddings (any number of texts) and one box per image
            for its phrase; the logit scale rides along so DDP sees every parameter used."""
            fmap = self.feature_map(images)
            return (self.embed_images(fmap), self.embed_texts(text_vectors),
                    self.predict_boxes(fmap, phrase_vectors), self.logit_scale.exp().clamp(max=100))

    return ImageTextModel()


def prepare_images(images, size: int):
    """Float images (B or list of (C, H, W) in [0, 1], C in 1/3/4) -> (B, 3, S, S) normalised."""
    torch = _torch()
    out = []
    for im in images:
        im = im.float()
        if im.shape[0] == 1:
            im = im.expand(3, -1, -1)
        elif im.shape[0] == 4:
            im = im[:3]
        if im.shape[-2:] != (size, size):  # the feed's resize= already gives SxS
            im = torch.nn.functional.interpolate(im[None], size=(size, size), mode="bilinear",
                                                 antialias=True, align_corners=False)[0]
        out.append(im)
    return (torch.stack(out) - 0.5) / 0.25


def array_to_tensor(image: np.ndarray):
    """A uint8 HxW or HxWxC array as a float (C, H, W) tensor in [0, 1]."""
    torch = _torch()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise CurateError(f"expected an HxW or HxWx3 image, got shape {arr.shape}")
    scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / scale).permute(2, 0, 1)


def contrastive_loss(image_emb, text_emb, logit_scale, same):
    """Symmetric InfoNCE; `same` (B, B) bool marks pairs whose texts are equal, which are
    all positives (targets spread evenly over them) rather than false negatives."""
    torch = _torch()
    logits = logit_scale * image_emb @ text_emb.T
    target = same.float() / same.float().sum(dim=1, keepdim=True)
    loss_i = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(target.T * torch.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def caption_keys(texts: list[str], device):
    """One int64 per text, equal for equal texts on every rank (a stable hash, not
    Python's salted one), so that ranks can tell which of each other's captions repeat."""
    import hashlib

    torch = _torch()
    return torch.tensor([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(),
                                        "little", signed=True) for t in texts],
                        dtype=torch.int64, device=device)


def gathered_contrastive_loss(image_emb, text_emb, logit_scale, keys):
    """contrastive_loss with every rank's pairs as negatives (CLIP's global batch).

    Each rank scores its own images against all ranks' texts and its own texts against all
    ranks' images (gradients flow back through the gather), with texts of equal `keys`
    (caption_keys) as positives. Ranks may hold different batch sizes: the gathered rows
    are padded and the padding masked out. Without a process group of 2 or more ranks it is
    contrastive_loss on the local batch."""
    torch = _torch()
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return contrastive_loss(image_emb, text_emb, logit_scale, keys[:, None] == keys[None, :])
    world, n = dist.get_world_size(), image_emb.shape[0]
    sizes = [torch.zeros(1, dtype=torch.int64, device=keys.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.int64, device=keys.device))
    sizes = [int(x.item()) for x in sizes]
    width = max(sizes)

    def pad(x, value=0):
        if x.shape[0] == width:
            return x
        fill = torch.full((width - x.shape[0], *x.shape[1:]), value, dtype=x.dtype,
                          device=x.device)
        return torch.cat([x, fill])

    valid = torch.cat([torch.arange(width, device=keys.device) < k for k in sizes])
    all_img = _gather_with_grad(pad(image_emb))[valid]
    all_txt = _gather_with_grad(pad(text_emb))[valid]
    key_list = [torch.zeros_like(pad(keys)) for _ in range(world)]
    dist.all_gather(key_list, pad(keys))
    all_keys = torch.cat(key_list)[valid]
    same = keys[:, None] == all_keys[None, :]  # (n, N): local rows, global columns
    target = same.float() / same.float().sum(dim=1, keepdim=True)
    loss_i = -(target * torch.log_softmax(logit_scale * image_emb @ all_txt.T, 1)).sum(1).mean()
    loss_t = -(target * torch.log_softmax(logit_scale * text_emb @ all_img.T, 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def _gather_with_grad(x):
    """Every rank's x (equal shapes) stacked along dim 0, in rank order; the gradient of
    each rank's rows is the sum of what every rank's loss sends them (an all-reduce)."""
    torch = _torch()
    dist = torch.distributed

    class Gather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, t.contiguous())
            ctx.rows, ctx.rank = t.shape[0], dist.get_rank()
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous().clone()
            dist.all_reduce(grad)
            return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]

    return Gather.apply(x)


def box_iou(a, b):
    """Elementwise IoU (and GIoU) of two (N, 4) box tensors x0, y0, x1, y1."""
    torch = _torch()
    ix0, iy0 = torch.maximum(a[:, 0], b[:, 0]), torch.maximum(a[:, 1], b[:, 1])
    ix1, iy1 = torch.minimum(a[:, 2], b[:, 2]), torch.minimum(a[:, 3], b[:, 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    iou = inter / union.clamp(min=1e-9)
    cx0, cy0 = torch.minimum(a[:, 0], b[:, 0]), torch.minimum(a[:, 1], b[:, 1])
    cx1, cy1 = torch.maximum(a[:, 2], b[:, 2]), torch.maximum(a[:, 3], b[:, 3])
    hull = ((cx1 - cx0) * (cy1 - cy0)).clamp(min=1e-9)
    return iou, iou - (hull - union) / hull


def save_run(model, config: ModelConfig, run_dir: str | Path) -> None:
    """Write config.json and model.pt (weights only) into run_dir, atomically each."""
    torch = _torch()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    tmp = run_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(run_dir / CONFIG_FILE)
    tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(run_dir / WEIGHTS_FILE)


def load_config(run_dir: str | Path) -> ModelConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CurateError(f"{run_dir} is not a trained run: {CONFIG_FILE} is missing "
                          f"(train one with `curate train BUILD --out {run_dir}`)")
    return ModelConfig.model_validate_json(path.read_text())


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(model, config) from a run folder, in eval mode on `device`."""
    torch = _torch()
    config = load_config(run_dir)
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise CurateError(f"{run_dir} has a config but no {WEIGHTS_FILE}: training never "
                          f"saved a checkpoint there")
    model = build_model(config)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device).eval(), config


def alignment_scores(model, images: list[np.ndarray], texts: list[str],
                     batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each image with its text (pairwise, not all-vs-all), float32 (N,)."""
    torch = _torch()
    if len(images) != len(texts):
        raise CurateError(f"{len(images)} images but {len(texts)} texts")
    model = getattr(model, "module", model)
    device = model.logit_scale.device
    image_size = _image_size(model)
    out = np.zeros(len(texts), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            ims = [array_to_tensor(a) for a in images[start:start + batch_size]]
            x = prepare_images(ims, image_size).to(device)
            t = torch.from_numpy(model.text_encoder(list(texts[start:start + batch_size])))
            img = model.embed_images(model.feature_map(x))
            txt = model.embed_texts(t.to(device))
            out[start:start + len(ims)] = (img * txt).sum(-1).float().cpu().numpy()
    return out


def _image_size(model) -> int:
    size = getattr(model, "image_size", None)
    if size is None:
        raise CurateError("model has no image_size: build it with build_model/load_run")
    return int(size)

"""The bundled model (curate.train.model), its training (Ray Train) and its evaluation."""

import numpy as np
import pytest
import torch

from curate.model.errors import CurateError
from curate.train.model import (
    ModelConfig,
    alignment_scores,
    box_iou,
    build_model,
    contrastive_loss,
    load_run,
    prepare_images,
    save_run,
)

HASHING = {"text_encoder": "hashing:64", "text_dim": 64}  # no model files: milliseconds


def test_save_load_roundtrip_gives_the_same_scores(tmp_path):
    config = ModelConfig(**HASHING, width=4, embed_dim=16, image_size=32)
    model = build_model(config).eval()
    images = [np.random.default_rng(i).integers(0, 255, (40, 30), np.uint8) for i in range(3)]
    images.append(np.full((20, 20, 3), 128, np.uint8))
    texts = ["a lesion on the left", "a nodule", "no finding", "dermoscopy image"]
    before = alignment_scores(model, images, texts, batch_size=3)
    save_run(model, config, tmp_path / "run")
    loaded, loaded_config = load_run(tmp_path / "run")
    assert loaded_config == config and not loaded.training
    after = alignment_scores(loaded, images, texts, batch_size=2)
    assert before.shape == (4,) and before.dtype == np.float32
    np.testing.assert_allclose(before, after, atol=1e-5)
    assert np.all(np.abs(after) <= 1.0 + 1e-5)
    with pytest.raises(CurateError, match="3 images but 2 texts"):
        alignment_scores(loaded, images[:3], texts[:2])
    with pytest.raises(CurateError, match="not a trained run"):
        load_run(tmp_path / "nowhere")


def test_images_of_any_size_and_channels_batch_to_one_shape():
    x = prepare_images([torch.rand(1, 80, 96), torch.rand(3, 200, 240), torch.rand(4, 9, 9)], 48)
    assert x.shape == (3, 3, 48, 48)


def test_contrastive_loss_treats_equal_texts_as_positives():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]]), dim=-1)
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    # images 0 and 1 share a caption: matching embeddings are the optimum, not a penalty
    good = contrastive_loss(emb, emb, torch.tensor(20.0), same)
    bad = contrastive_loss(emb, emb.flip(0), torch.tensor(20.0), same)
    assert good < 0.7 and bad > 5


def test_box_iou():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]])
    iou, giou = box_iou(a, b)
    np.testing.assert_allclose(iou.numpy(), [1.0, 1 / 3], rtol=1e-5)
    assert giou[1] == pytest.approx(iou[1])  # the hull is the union here
    _, giou_apart = box_iou(a[:1], torch.tensor([[0.75, 0.75, 1.0, 1.0]]))
    assert giou_apart[0] < 0  # disjoint boxes still get a gradient towards each other
    boxes = build_model(ModelConfig(**HASHING, width=4, embed_dim=16, image_size=32)).predict_boxes(
        torch.rand(2, 32, 2, 2), torch.rand(2, 64))
    assert torch.all(boxes[:, 0] <= boxes[:, 2]) and torch.all(boxes[:, 1] <= boxes[:, 3])



def test_closed_vqa_items_become_option_statements():
    from curate.train.trainer import choice_items

    record = {"vqa": [
        {"type": "closed", "question": "Is a nodule present?", "answer": "yes", "options": []},
        {"type": "choice", "question": "Which side?", "answer": "left",
         "options": ["right", "left"]},
        {"type": "open", "question": "What is shown?", "answer": "a chest", "options": []},
        {"type": "closed", "question": "Size?", "answer": "big", "options": []}]}  # no options
    assert choice_items(record) == [(["Is a nodule present? yes", "Is a nodule present? no"], 0),
                                    (["Which side? right", "Which side? left"], 1)]


def test_choice_loss_rewards_scoring_the_answer_highest():
    from curate.train.trainer import _choice_loss

    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    statements = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    owners = [0, 0, 1, 1, 1]  # image 0: 2 options, image 1: 3 options
    right = _choice_loss(img, statements, torch.tensor(10.0), owners, [(0, 2, 0), (2, 3, 0)], "cpu")
    wrong = _choice_loss(img, statements, torch.tensor(10.0), owners, [(0, 2, 1), (2, 3, 2)], "cpu")
    assert right < 0.01 and wrong > 5


def test_recall_at_k_counts_the_right_text_not_the_right_row():
    from curate.train.evaluate import recall_at_k

    sims = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    correct = np.array([[True, False, False], [False, True, False], [False, False, True]])
    r = recall_at_k(sims, correct, ks=(1, 2, 3))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}



def _write_split(build, split, n):
    """A tiny shard of n samples with the build's three members (no curate build needed)."""
    import io
    import json

    import webdataset as wds
    from PIL import Image

    from curate.model import masks

    (build / "shards").mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(build / "shards" / f"{split}-000000.tar")) as sink:
        for i in range(n):
            side = "left" if i % 2 else "right"
            image = np.zeros((40, 48), np.uint8)
            image[10:20, (30 if side == "left" else 6):(40 if side == "left" else 16)] = 255
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            box = [0.625, 0.25, 0.833, 0.5] if side == "left" else [0.125, 0.25, 0.333, 0.5]
            record = {"caption": f"A nodule on the {side}.", "rois": [
                {"finding": "nodule", "bbox_norm": box, "bbox": [0, 0, 1, 1]}],
                "vqa": [{"type": "closed", "question": "Which side?", "answer": side,
                         "options": ["left", "right"], "category": "laterality"},
                        {"type": "closed", "question": "Is a nodule present?", "answer": "yes",
                         "options": [], "category": "presence"}]}
            sink.write({"__key__": f"s{i:03d}", "png": png.getvalue(),
                        "json": json.dumps(record).encode(),
                        "masks.npz": masks.pack(np.zeros((1, 40, 48), np.uint8))})


def test_eval_falls_back_to_test_and_writes_eval_json(tmp_path):
    import json

    from curate.train.evaluate import evaluate

    config = ModelConfig(**HASHING, width=4, embed_dim=16, image_size=32)
    save_run(build_model(config), config, tmp_path / "run")
    build = tmp_path / "build"
    _write_split(build, "train", 2)
    with pytest.raises(CurateError, match="neither val nor test"):
        evaluate(tmp_path / "run", build)
    _write_split(build, "test", 6)
    notes: list[str] = []
    result = evaluate(tmp_path / "run", build, batch_size=4, log=notes.append)
    assert result["split"] == "test" and "no val shards" in result["note"] and notes
    assert result["samples"] == 6 and result["retrieval"]["unique_captions"] == 2
    assert result["roi"]["n"] == 6 and 0 <= result["roi"]["hit@0.5"] <= 1
    assert result["vqa"]["n"] == 12 and set(result["vqa"]["by_category"]) == {"laterality",
                                                                               "presence"}
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == result


def test_train_refuses_what_it_cannot_train_on(tmp_path):
    from curate.train.trainer import train

    with pytest.raises(CurateError, match="no train shards"):
        train(tmp_path, tmp_path / "run", steps=1, log=lambda m: None)
    _write_split(tmp_path / "b", "train", 2)
    with pytest.raises(CurateError, match="no state.json"):
        train(tmp_path / "b", tmp_path / "run", steps=1, resume=True, log=lambda m: None)


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    """The demo recipe built once for this module (in-process executor)."""
    from curate.build import build
    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("train") / "demo"
    build(ROOT / "recipes" / "demo.yaml", out, executor="local", log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_two_workers_train_on_the_demo_then_resume_and_evaluate(demo_build, local_ray, tmp_path):
    import json

    from curate.train.evaluate import evaluate
    from curate.train.trainer import train

    run = tmp_path / "run"
    lines: list[str] = []
    last = train(demo_build, run, workers=2, steps=30, batch_size=8, log_every=5, lr=2e-3,
                 log=lines.append)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20, 25, 30] and last == metrics[-1]
    assert metrics[-1]["loss"] < 0.75 * metrics[0]["loss"]  # it learns
    assert metrics[-1]["roi"] < metrics[0]["roi"]
    assert any(line.startswith("step 30/30  loss") and "samples/s" in line for line in lines)
    assert {"config.json", "model.pt", "optimizer.pt", "state.json"} <= {p.name for p in
                                                                          run.iterdir()}
    assert json.loads((run / "state.json").read_text())["step"] == 30

    with pytest.raises(CurateError, match="already holds a run"):
        train(demo_build, run, workers=1, steps=40, log=lambda m: None)
    train(demo_build, run, workers=2, steps=35, batch_size=8, log_every=5, resume=True,
          log=lambda m: None)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 35 and json.loads((run / "state.json").read_text())["step"] == 35

    result = evaluate(run, demo_build)
    assert result["split"] == "val" and result["samples"] >= 1
    assert json.loads((run / "eval.json").read_text()) == result
    for key in ("image_to_text", "text_to_image"):
        assert set(result["retrieval"][key]) == {"R@1", "R@5", "R@10"}
    assert result["roi"]["n"] >= 1 and 0 <= result["roi"]["mean_iou"] <= 1
    assert result["vqa"]["n"] >= 1 and 0 <= result["vqa"]["accuracy"] <= 1

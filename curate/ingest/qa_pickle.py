"""Question-answer tables shipped as Python pickles, read without running any code.

PathVQA publishes its QA pairs as `split/qas/<split>/<split>_qa.pkl`, each a list of dicts
such as {'image': 'val_0261', 'question': '...', 'answer': '...'}. `pickle.load` would run
whatever a file names (a REDUCE of `os.system` is four opcodes), so these files are read
the way the Python docs' "Restricting Globals" section shows, and stricter:

1. every opcode is checked with `pickletools.genops` (which parses, never builds) against
   the opcodes that make plain data; one that names, builds or calls an object (GLOBAL,
   REDUCE, BUILD, NEWOBJ, INST, OBJ, EXT*, persistent ids) refuses the whole file;
2. the load itself goes through `PlainUnpickler`, whose `find_class` refuses every global,
   so nothing outside None, bools, numbers, str, bytes, lists, tuples, dicts and sets can
   come back even if step 1 were wrong.

A refused file is a ConfigError naming it (the source cannot be planned; nothing in it has
run). A row that is not a dict, lacks a declared column or holds something other than text
in it is a quarantine row of its own (`Problem`), the way other bad input is kept on record.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

from curate.ingest.files import Problem
from curate.model.errors import ConfigError, IngestError

# opcodes that push or assemble plain data (protocols 0-5); everything else is refused
PLAIN_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "NONE", "NEWTRUE", "NEWFALSE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
})


class PlainUnpickler(pickle.Unpickler):
    """An Unpickler that resolves no global at all: only plain containers, text and numbers."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}; only lists, dicts, text "
                                     "and numbers are read from a pickle")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference")


def check_opcodes(data: bytes) -> None:
    """UnpicklingError at the first opcode that would name, build or call an object."""
    recent: list[str] = ["", ""]  # STACK_GLOBAL takes module and name from the stack
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name not in PLAIN_OPCODES:
                named = arg.replace(" ", ".") if op.name in ("GLOBAL", "INST") else \
                    ".".join(recent) if op.name == "STACK_GLOBAL" else ""
                raise pickle.UnpicklingError(
                    f"opcode {op.name} at byte {pos}{f' (naming {named})' if named else ''} "
                    "would build or call an object")
            if isinstance(arg, str):
                recent = [recent[1], arg[:80]]
    except ValueError as exc:  # genops: truncated or unknown opcode
        raise pickle.UnpicklingError(f"not a pickle: {exc}") from exc


def load_plain(path: Path, rel: str) -> object:
    """The plain data a pickle holds; ConfigError naming `rel` when it holds anything else
    or is damaged. The file is read once into memory (QA tables are megabytes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{rel}: cannot be read: {exc}") from exc
    try:
        check_opcodes(data)
        return PlainUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError,
            MemoryError, RecursionError) as exc:
        raise ConfigError(f"{rel}: refused as a pickle of plain data: {exc} (nothing in it "
                          "was run; convert it to JSON if it is trusted)") from exc


def _cell(row: dict, column: str, numbers: bool = False) -> str:
    """A cell's text; IngestError when the column is missing or holds anything else."""
    if column not in row:
        raise IngestError(f"no {column!r} key")
    value = row[column]
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise IngestError(f"{column!r} holds a {type(value).__name__}, not text")


def pickle_rows(path: Path, cfg, problems: list[Problem] | None = None) -> list[dict]:
    """Rows of a QA pickle (a list of dicts) with the declared columns as text.

    A bad row is a Problem appended to `problems` (a quarantine row) and left out; without
    a `problems` list the first bad row is a ConfigError. A file of which no row has the
    declared columns is a ConfigError: the declaration, not the rows, is wrong."""
    rel = cfg.file
    data = load_plain(path, rel)
    if not isinstance(data, list | tuple):
        raise ConfigError(f"{rel}: holds a {type(data).__name__}, not a list of "
                          "question-answer rows")
    text_columns = [cfg.image_column, cfg.question_column]
    other = [c for c in [cfg.type_column, cfg.modality_column, *cfg.include, *cfg.exclude]
             if c is not None]
    rows, bad = [], []
    for index, row in enumerate(data):
        try:
            if not isinstance(row, dict):
                raise IngestError(f"a {type(row).__name__}, not a dict")
            out = {c: _cell(row, c) for c in text_columns}
            out[cfg.answer_column] = _cell(row, cfg.answer_column, numbers=True)
            out |= {c: _cell(row, c, numbers=True) for c in other if row.get(c) is not None}
        except IngestError as exc:
            bad.append(IngestError(f"{rel}: row {index}: {exc}", file=rel))
            continue
        rows.append(out)
    if bad and (problems is None or not rows):
        raise ConfigError(f"{bad[0]}" + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1
                                         else "") + "; check layout.qa's column names")
    if bad:
        problems.extend(Problem(rel, "plan", exc) for exc in bad)
    return rows

"""What the data card costs each shard writer: `card_stats` on one manifest part.

Every shard writer computes the card's aggregates on its own part, so at 25M samples
their cost is paid once per sample. Measured on a synthetic part of N rows (ROIs, VQA,
captions as the manifest holds them), against two baselines run here:

- reading the same part back from Parquet (what the writer's I/O costs anyway);
- the way examples were picked before: filtering the whole part once per source,

on the part as one chunk and as many small chunks (a shard writer's table is the
concatenation of the batches it received; filtering cost grows with the chunk count).

    python benchmarks/card_stats.py            # N = 20000
    python benchmarks/card_stats.py --n 5000

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curate.report.datacard import EXAMPLE_FIELDS, card_stats  # noqa: E402
from tests.test_reports import manifest  # noqa: E402 - the synthetic manifest rows


def examples_by_filter(table: pa.Table, per_source: int = 4) -> list[dict]:
    """The previous example picker: one filter of the whole part per source."""
    out = []
    for source in pc.unique(table.column("source")).to_pylist():
        part = table.filter(pc.equal(table.column("source"), source)).select(EXAMPLE_FIELDS)
        idx = pc.bottom_k_unstable(part.column("sample_id"), min(per_source, part.num_rows))
        out += part.take(idx).to_pylist()
    return out


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="rows in the part")
    args = parser.parse_args()
    unit = manifest(40)
    chunked = pa.concat_tables([unit] * max(1, args.n // unit.num_rows))
    table = chunked.combine_chunks()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.parquet"
        pq.write_table(table, path)
        read_s = best(lambda: pq.read_table(path))
    stats_s = best(lambda: card_stats(table))
    old_examples_s = best(lambda: examples_by_filter(table))
    chunked_s = best(lambda: card_stats(chunked), 3)
    old_chunked_s = best(lambda: examples_by_filter(chunked), 3)
    per_row_us = 1e6 * stats_s / table.num_rows
    print(f"rows {table.num_rows}: read part {read_s * 1e3:.1f} ms, card_stats "
          f"{stats_s * 1e3:.1f} ms ({per_row_us:.1f} us a row), examples by filtering "
          f"per source (before) {old_examples_s * 1e3:.1f} ms")
    print(f"card_stats / read: {stats_s / read_s:.2f}; card_stats / old examples alone: "
          f"{stats_s / old_examples_s:.3f}")
    print(f"in {chunked.column(0).num_chunks} chunks: card_stats {chunked_s * 1e3:.1f} ms, "
          f"old examples alone {old_chunked_s * 1e3:.1f} ms, ratio {chunked_s / old_chunked_s:.3f}")
    print(json.dumps({"rows": table.num_rows, "read_s": round(read_s, 4),
                      "card_stats_s": round(stats_s, 4),
                      "old_examples_s": round(old_examples_s, 4),
                      "card_stats_us_per_row": round(per_row_us, 2),
                      "ratio_to_read": round(stats_s / read_s, 3),
                      "ratio_to_old_examples": round(stats_s / old_examples_s, 4),
                      "chunks": chunked.column(0).num_chunks,
                      "chunked_card_stats_s": round(chunked_s, 4),
                      "chunked_old_examples_s": round(old_chunked_s, 4),
                      "chunked_ratio_to_old_examples": round(chunked_s / old_chunked_s, 4)}))


if __name__ == "__main__":
    main()

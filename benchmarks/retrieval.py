"""Retrieval quality of the knowledge base: dense (MiniLM) against keyword baselines.

Runs the labelled queries in benchmarks/data/retrieval_queries.jsonl (each names the
document(s) that answer it) against the packaged corpus and prints, for each method,
recall@1 and recall@5 at the document level (a document's rank is that of its best
chunk), overall and per query kind (keyword: uses the document's own terms; paraphrase:
lay wording that avoids them; sample: the text `query_for_sample` builds from a sample
context, without its finding-tag filter), hit@k (at least one relevant document in the top k), MRR and query latency,
with the ratio of the dense model to the keyword baselines measured in the same run:
BM25 (implemented here, k1=1.5, b=0.75) and TF-IDF cosine (scikit-learn), both over the
same chunks and the same title+heading+text the model embeds. A reciprocal-rank fusion
of dense and BM25 is reported as well.

    HF_HUB_OFFLINE=1 python benchmarks/retrieval.py [--model SPEC] [--kb PATH] [--json OUT]

Scale mode (issue 9 item 5): `--scale N` generates a synthetic corpus of N passages (and
FACTOR x N, default 4) as one JSONL file, builds each with `build_kb` in a child process
and prints build time, passages/s and peak memory (the child's max RSS, and its growth
over the RSS once the model is loaded), so that flat memory shows as a growth that does
not follow N. The baseline, run in the same invocation, is the in-memory path
(`KnowledgeBase.from_corpus`: every passage and vector held at once, which is how
`build_kb` worked before it streamed) on the N corpus.

    HF_HUB_OFFLINE=1 python benchmarks/retrieval.py --scale 2000 [--factor 4] [--model minilm]
        [--backend auto|lance|parquet] [--device cpu|cuda] [--batch-size 2048] [--no-baseline]

The queries were written by the author of the corpus, so absolute numbers are
optimistic; the ratio between methods is the useful figure.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.kb import KnowledgeBase, build_kb, default_corpus_dir  # noqa: E402
from curate.kb.index import embed_text  # noqa: E402
from curate.kb.store import all_rows  # noqa: E402

QUERIES = ROOT / "benchmarks" / "data" / "retrieval_queries.jsonl"
STOP = set("a an and are as at be by for from how in is it of on or the to what when where "
           "which why with does do this that than into its their".split())
_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP]


class BM25:
    """Okapi BM25 over chunk texts; scores every chunk for a query."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        self.docs = [Counter(tokens(t)) for t in texts]
        self.lens = np.array([sum(d.values()) for d in self.docs], float)
        self.avg = float(self.lens.mean())
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(texts)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
        self.k1, self.b = k1, b

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(len(self.docs))
        for w in set(tokens(query)):
            idf = self.idf.get(w)
            if idf is None:
                continue
            tf = np.array([d.get(w, 0) for d in self.docs], float)
            out += idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * self.lens / self.avg))
        return out


def doc_ranking(chunk_scores: np.ndarray, chunk_docs: list[str]) -> list[str]:
    """Documents ordered by their best chunk's score (ties by doc id)."""
    best: dict[str, float] = {}
    for s, d in zip(chunk_scores, chunk_docs, strict=True):
        best[d] = max(best.get(d, -np.inf), float(s))
    return sorted(best, key=lambda d: (-best[d], d))


def rrf(rankings: list[list[str]], k: int = 60) -> list[str]:
    score: dict[str, float] = {}
    for ranking in rankings:
        for r, d in enumerate(ranking):
            score[d] = score.get(d, 0.0) + 1.0 / (k + r + 1)
    return sorted(score, key=lambda d: (-score[d], d))


def metrics(rankings: list[list[str]], relevant: list[set[str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in (1, 5):
        out[f"recall@{k}"] = float(np.mean([len(rel & set(r[:k])) / len(rel)
                                            for r, rel in zip(rankings, relevant, strict=True)]))
        out[f"hit@{k}"] = float(np.mean([bool(rel & set(r[:k]))
                                         for r, rel in zip(rankings, relevant, strict=True)]))
    rr = []
    for r, rel in zip(rankings, relevant, strict=True):
        ranks = [i for i, d in enumerate(r) if d in rel]
        rr.append(1.0 / (ranks[0] + 1) if ranks else 0.0)
    out["mrr"] = float(np.mean(rr))
    return out


def timed(fn: Callable[[], list[list[str]]]) -> tuple[list[list[str]], float]:
    t = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("--scale", "--_child") or a.startswith("--scale=") for a in argv):
        from kb_scale import scale_main  # benchmarks/kb_scale.py

        return scale_main(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="embedder spec (default: packaged MiniLM)")
    ap.add_argument("--kb", type=Path, default=None, help="use this built index instead of building one")
    ap.add_argument("--queries", type=Path, default=QUERIES)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    queries = [json.loads(line) for line in args.queries.read_text().splitlines() if line.strip()]
    relevant = [set(q["relevant"]) for q in queries]
    texts = [q["query"] for q in queries]
    with tempfile.TemporaryDirectory() as tmp:
        build = None
        path = args.kb
        if path is None:
            path = Path(tmp) / "kb"
            build = build_kb(default_corpus_dir(), path, args.model)
        kb = KnowledgeBase.open(path, args.model)
        missing = {d for rel in relevant for d in rel} - set(kb.documents())
        if missing:
            raise SystemExit(f"queries name documents not in the index: {sorted(missing)}")
        rows = list(all_rows(kb.store))
        chunk_docs = [r["doc_id"] for r in rows]
        corpus = [embed_text(r["title"], r["heading"], r["text"]) for r in rows]
        kb.embedder.embed_queries(["warm up"])  # load the model outside the timed region
        n = len(kb)

        dense, t_dense = timed(lambda: [[p.doc_id for p in hits] for hits in
                                        kb.query_many(texts, k=n, unique_docs=True)])
        bm25 = BM25(corpus)
        lexical, t_bm25 = timed(lambda: [doc_ranking(bm25.scores(q), chunk_docs) for q in texts])
        results = {"dense": (dense, t_dense), "bm25": (lexical, t_bm25)}
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(tokenizer=tokens, lowercase=False, token_pattern=None,
                                  sublinear_tf=True)
            mat = vec.fit_transform(corpus)
            results["tfidf"] = timed(lambda: [doc_ranking((mat @ vec.transform([q]).T).toarray().ravel(),
                                                          chunk_docs) for q in texts])
        except ImportError:
            print("scikit-learn not installed: TF-IDF baseline skipped")
        results["dense+bm25 (rrf)"] = ([rrf([d, b]) for d, b in zip(dense, lexical, strict=True)],
                                       t_dense + t_bm25)

    kinds = sorted({q.get("kind", "all") for q in queries})
    report = {"queries": len(queries), "documents": len(set(chunk_docs)), "chunks": n,
              "model": kb.model_name, "build": build, "methods": {}, "by_kind": {}}
    for name, (rankings, secs) in results.items():
        report["methods"][name] = {**metrics(rankings, relevant),
                                   "ms_per_query": 1000 * secs / len(queries)}
        for kind in kinds:
            idx = [i for i, q in enumerate(queries) if q.get("kind", "all") == kind]
            report["by_kind"].setdefault(kind, {"queries": len(idx)})[name] = metrics(
                [rankings[i] for i in idx], [relevant[i] for i in idx])
    print(f"{len(queries)} queries, {report['documents']} documents, {n} chunks, "
          f"model {kb.model_name}" + (f", index built in {build['seconds']:.1f} s" if build else ""))
    cols = ["recall@1", "recall@5", "hit@1", "hit@5", "mrr", "ms_per_query"]
    print(f"{'method':<18}" + "".join(f"{c:>13}" for c in cols))
    for name, m in report["methods"].items():
        print(f"{name:<18}" + "".join(f"{m[c]:>13.3f}" for c in cols))
    print("\nrecall@1 / recall@5 by query kind")
    print(f"{'kind':<12}{'n':>5}" + "".join(f"{m:>20}" for m in report["methods"]))
    for kind, by in report["by_kind"].items():
        print(f"{kind:<12}{by['queries']:>5}" + "".join(
            f"{by[m]['recall@1']:>13.3f} /{by[m]['recall@5']:>5.2f}" for m in report["methods"]))
    print()
    d = report["methods"]["dense"]
    for base in ("bm25", "tfidf"):
        if base in report["methods"]:
            b = report["methods"][base]
            ratios = {k: (d[k] / b[k] if b[k] else float("inf")) for k in ("recall@1", "recall@5")}
            report[f"ratio_dense_over_{base}"] = ratios
            print(f"dense / {base}: recall@1 x{ratios['recall@1']:.2f}, recall@5 x{ratios['recall@5']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({"model": report["model"], "chunks": n, **{
        f"{name}_{k}": round(m[k], 4) for name, m in report["methods"].items()
        for k in ("recall@1", "recall@5", "mrr")}}, sort_keys=True))
    return report


if __name__ == "__main__":
    main()

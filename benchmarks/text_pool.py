"""Build the real multi-domain text pool from ../shared/data/text (never copied into the repository).

Pool = every text set there except the target tasks' train and test splits (ChemProt train is the
GOT-D target; ChemProt/SciCite test splits are held out for the warm-up harness). Each row has
`text`, `domain` (the data set) and `source` (file). Writes OUT/pool.jsonl and OUT/target_chemprot.jsonl.

    python benchmarks/text_pool.py --out /tmp/textpool [--shared ../shared]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

csv.field_size_limit(1 << 30)


def _tsv(path: Path, header: bool = True):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if header:
        head, rows = rows[0], rows[1:]
        return [dict(zip(head, r)) for r in rows if len(r) == len(head)]
    return rows


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pool_rows(text_dir: Path):
    def emit(domain, path, texts):
        for t in texts:
            t = " ".join(t.split())
            if t:
                yield {"text": t, "domain": domain, "source": f"{path.parent.name}/{path.name}"}

    for split in ("dev",):
        p = text_dir / "chemprot" / f"{split}.jsonl"
        yield from emit("chemprot", p, (r["text"] for r in _jsonl(p)))
    for split in ("train", "dev"):
        p = text_dir / "sci-cite" / f"{split}.jsonl"
        yield from emit("sci-cite", p, (r["text"] for r in _jsonl(p)))
    for split in ("dev", "test"):
        p = text_dir / "mag" / f"{split}.jsonl"
        yield from emit("mag", p, (r["text"] for r in _jsonl(p)))
    glue = text_dir / "glue"
    for split in ("train", "dev", "test"):
        p = glue / "CoLA" / f"{split}.tsv"
        if split == "test":
            yield from emit("cola", p, (r["sentence"] for r in _tsv(p)))
        else:
            yield from emit("cola", p, (r[3] for r in _tsv(p, header=False) if len(r) == 4))
        p = glue / "SST-2" / f"{split}.tsv"
        yield from emit("sst2", p, (r["sentence"] for r in _tsv(p)))
        p = glue / "MRPC" / f"{split}.tsv"
        yield from emit("mrpc", p, (r["#1 String"] + " " + r["#2 String"] for r in _tsv(p)))
        p = glue / "RTE" / f"{split}.tsv"
        yield from emit("rte", p, (r["sentence1"] + " " + r["sentence2"] for r in _tsv(p)))
        p = glue / "STS-B" / f"{split}.tsv"
        yield from emit("stsb", p, (r["sentence1"] + " " + r["sentence2"] for r in _tsv(p)))
    for task in ("MR", "CR"):
        for split in ("train", "dev"):
            p = text_dir / "senteval" / task / f"{split}.tsv"
            yield from emit(task.lower(), p, (r[1] for r in _tsv(p, header=False) if len(r) == 2))
    p = text_dir / "ag_news" / "test.csv"
    with open(p, encoding="utf-8", newline="") as f:
        yield from emit("ag_news", p, (r[1] + ". " + r[2] for r in csv.reader(f) if len(r) == 3))
    for split in ("valid", "test"):
        p = text_dir / "wikitext-2" / f"wiki.{split}.tokens"
        with open(p, encoding="utf-8") as f:
            paras = [line.strip() for line in f if line.strip() and not line.strip().startswith("=")]
        yield from emit("wikitext", p, paras)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    text_dir = Path(args.shared) / "data" / "text"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(pool_rows(text_dir))
    with open(out / "pool.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": i, **r}, ensure_ascii=False) + "\n")
    target = _jsonl(text_dir / "chemprot" / "train.jsonl")
    with open(out / "target_chemprot.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(target):
            f.write(json.dumps({"id": i, "text": r["text"], "label": r["label"]}, ensure_ascii=False) + "\n")
    counts = Counter(r["domain"] for r in rows)
    print(f"pool: {len(rows)} rows -> {out / 'pool.jsonl'}")
    for d, c in counts.most_common():
        print(f"  {d:10s} {c:7d}")
    print(f"target: {len(target)} ChemProt training texts -> {out / 'target_chemprot.jsonl'}")


if __name__ == "__main__":
    main()

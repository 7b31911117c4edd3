"""benchmarks/embed_speed.py on a tiny encoder: every backend timed on every text set, cosines, GOT-D's picks."""

import json

import pytest


def test_embed_speed_records_speed_cosine_and_picks(tmp_path, encoder, repo_script):
    pytest.importorskip("torch")
    bench = repo_script("benchmarks/embed_speed.py")
    with open(tmp_path / "pool.jsonl", "w") as f:
        for i in range(60):
            domain = "sst2" if i % 3 == 0 else "other"
            f.write(json.dumps({"id": i, "text": " ".join(f"w{(5 * i + j) % 40}" for j in range(2 + i % 7)),
                                "domain": domain}) + "\n")
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "science").write_text("w1 w2 w3 w4 w5 w6 w7 w8\n%\nw9 w10 w11 w12 w13 w14 w15\n%\n")
    record = tmp_path / "record.json"
    assert bench.main(["--pool", str(tmp_path / "pool.jsonl"), "--embedder", str(encoder), "--speed-texts", "12",
                       "--fortunes", str(fortunes), "--threads", "1", "--blocks", "3", "--overlap-pool", "40",
                       "--target-size", "5", "--budget-share", "0.1", "--record", str(record)]) == 0
    results = json.loads(record.read_text())["results"]
    speed = [r for r in results if r["case"] == "speed"]
    assert {(r["texts"], r["backend"]) for r in speed} == {
        (t, b) for t in ("pool first 12", "demo fortunes first 2", "GOT-D pool 40 + target 5")
        for b in ("torch", "torch-bf16")}
    assert all(r["texts_per_s"] > 0 and r["cosine_min"] > 0.99 for r in speed)
    assert all(r["cosine_min"] == 1.0 for r in speed if r["backend"] == "torch")
    picks = {r["backend"]: r for r in results if r["case"] == "gotd picks"}
    assert picks["torch"]["overlap"] == 1.0 and picks["torch"]["budget"] == 4
    assert 0.0 <= picks["torch-bf16"]["overlap"] <= 1.0

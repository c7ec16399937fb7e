"""`slg eval pii FILE --out PRED` (fixed contract): output rows, scores, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared_guards.cli import main
from shared_guards.evaluation.pii import Tally, prf

ROWS = [
    {"id": "a", "text": "Call Maria Schmidt at 905-674-3793 please.", "spans": [
        {"start": 5, "end": 18, "label": "PERSON"}, {"start": 22, "end": 34, "label": "PHONE_NUMBER"}]},
    {"id": "b", "text": "What is the limit for card 4454794511390933?", "spans": [
        {"start": 27, "end": 43, "label": "CREDIT_CARD"}]},
    {"id": "c", "text": "She moved to Canada; see https://www.example.ca/", "spans": [
        {"start": 13, "end": 19, "label": "GPE"}, {"start": 25, "end": 48, "label": "DOMAIN_NAME"}]},
    {"id": "d", "text": "Nothing personal here."},
]


def test_eval_writes_contract_rows_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "pred.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["eval", "pii", str(src), "--out", str(out), "--no-progress"]) == 0
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == ["a", "b", "c", "d"]
    for p in preds:
        assert set(p) == {"id", "spans"}
        for s in p["spans"]:
            assert set(s) == {"start", "end", "label"} and 0 <= s["start"] < s["end"]
    by_id = {p["id"]: {(s["start"], s["end"], s["label"]) for s in p["spans"]} for p in preds}
    assert (22, 34, "PHONE_NUMBER") in by_id["a"] and (27, 43, "CREDIT_CARD") in by_id["b"]
    assert {lab for _, _, lab in by_id["c"]} == {"LOCATION", "URL"}  # GPE -> LOCATION, DOMAIN_NAME -> URL
    assert by_id["d"] == set()
    report = capsys.readouterr().out
    assert "OVERALL (supported)" in report and "CREDIT_CARD" in report and "F2" in report


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": 1, "text": "ok"}\nnot json\n', ":2: not JSON"),
    ('{"text": "no id"}\n', ":1: each row needs an 'id'"),
    ('{"id": 1, "text": "x", "spans": [{"start": "a"}]}\n', ":1: spans need"),
])
def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                    message: str) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    assert main(["eval", "pii", str(src), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_overlap_matching_and_f2() -> None:
    t = Tally()
    t.add(gold=[(0, 10, "PERSON"), (20, 30, "LOCATION")], pred=[(2, 5, "PERSON"), (20, 30, "PERSON"), (40, 44, "URL")])
    assert (t.gold_found["PERSON"], t.gold_found["LOCATION"]) == (1, 0)  # label must match
    assert (t.pred_ok["PERSON"], t.pred["PERSON"], t.pred_ok["URL"]) == (1, 2, 0)
    p, r, f1, f2 = prf(pred=3, pred_ok=1, gold=2, gold_found=1)
    assert (round(p, 3), r) == (0.333, 0.5) and round(f2, 3) == round(5 * p * r / (4 * p + r), 3)

"""Benchmark rows -> prompts byte-equal to lmms-eval's doc_to_text (the expected strings are
written out from its task files), the aggregations (MLVU's M-avg vs micro), unusable rows with
their reasons, and the file loaders. The extractors: test_extract.py."""

import json

import pytest

from leanpo_jax.eval import scoring, tasks

VIDEOMME_ROW = {"videoID": "fFjv93ACGo8", "question_id": "001-1", "duration": "short", "domain": "Knowledge",
                "sub_category": "Humanity & History", "task_type": "Counting Problem",
                "question": "How many red socks are above the fireplace?",
                "options": ["A. 0.", "B. 1.", "C. 2.", "D. 3."], "answer": "C"}


def only_item(task, row, **kw):
    items, bad = tasks.build_items(task, [row], **kw)
    assert not bad, bad
    return items[0]


def test_videomme_prompt_and_its_post_prompt_variant():
    item = only_item("videomme", VIDEOMME_ROW)
    assert item.question_text == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "How many red socks are above the fireplace?\nA. 0.\nB. 1.\nC. 2.\nD. 3.\n"
        "\nAnswer with the option's letter from the given choices directly.")
    assert item.letters == ("A", "B", "C", "D") and item.gold == "C" and item.video == "fFjv93ACGo8.mp4"
    assert item.groups == {"duration": "short", "domain": "Knowledge", "task_type": "Counting Problem"}
    names = ["fFjv93ACGo8.mp4", "fFjv93ACGo8.MP4", "fFjv93ACGo8.mkv"]
    assert tasks.video_candidates(item) == names + [f"data/{n}" for n in names]  # flat, then the hub snapshot's data/
    # lmms-eval's LLaVA-Video variant, by name and as literal text: the same prompt.
    for post in ("llava_vid", "The best answer is:"):
        variant = only_item("videomme", VIDEOMME_ROW, post_prompt=post)
        assert variant.question_text.endswith("C. 2.\nD. 3.\nThe best answer is:")
    assert only_item("videomme", VIDEOMME_ROW, post_prompt="default").question_text == item.question_text


def test_mlvu_longvideobench_nextqa_and_mcq_prompts():
    mlvu = only_item("mlvu", {"video_name": "1_plotQA/movie101_66.mp4", "task_type": "plotQA",
                              "question": "What is the man doing?\n(A) running\n(B) eating\n(C) sleeping\n(D) reading",
                              "answer": "(B)"})
    assert mlvu.question_text == ("What is the man doing?\n(A) running\n(B) eating\n(C) sleeping\n(D) reading"
                                  "\nOnly give the best option.\nBest option: (")
    assert mlvu.gold == "B" and mlvu.groups == {"task_type": "plotQA"}
    assert tasks.video_candidates(mlvu) == ["1_plotQA/movie101_66.mp4", "1_plotQA/1_plotQA/movie101_66.mp4",
                                            "video/1_plotQA/1_plotQA/movie101_66.mp4"]
    flat = only_item("mlvu", {"video_name": "movie101_66.mp4", "task_type": "plotQA", "question": "Q?\n(A) a\n(B) b",
                              "answer": "A"})
    assert tasks.video_candidates(flat) == ["movie101_66.mp4", "1_plotQA/movie101_66.mp4",
                                            "video/1_plotQA/movie101_66.mp4"]
    test_split = only_item("mlvu", {"video_name": "t.mp4", "task_type": "sportsQA", "question": "Q?\n(A) a\n(B) b",
                                    "answer": "B"}, post_prompt="test")
    assert test_split.question_text == "Q?\n(A) a\n(B) b"  # mlvu_test.yaml sets no post prompt
    lvb = only_item("longvideobench", {"id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4", "question": "What is worn?",
                                       "option0": "a hat", "option1": "a scarf", "option2": "gloves", "option3": "N/A",
                                       "option4": "N/A", "correct_choice": 2, "duration_group": 15,
                                       "question_category": "S2E"})
    assert lvb.question_text == ("What is worn?\nA. a hat\nB. a scarf\nC. gloves\n"
                                 "Answer with the option's letter from the given choices directly.\n")
    assert lvb.letters == ("A", "B", "C") and lvb.gold == "C"
    assert lvb.groups == {"duration_group": "15", "question_category": "S2E"}
    nextqa = only_item("nextqa", {"video": 4010069381, "qid": 6, "type": "CW", "question": " why did the boy fall ",
                                  "a0": "slipped", "a1": "pushed ", "a2": "tired", "a3": "jumped", "a4": "tripped",
                                  "answer": 1})
    # nextqa_mc_test.yaml sets no post prompt: the prompt ends with the last option.
    assert nextqa.question_text == "why did the boy fall\nA. slipped\nB. pushed\nC. tired\nD. jumped\nE. tripped"
    assert nextqa.gold == "B" and nextqa.video == "4010069381.mp4"
    assert (tasks.TASKS["nextqa"].max_new_tokens, tasks.TASKS["nextqa"].stop_strings) == (1024, ("\n\n",))
    directly = only_item("nextqa", {"video": 1, "qid": 2, "question": "q", "a0": "a", "a1": "b", "a2": "c", "a3": "d",
                                    "a4": "e", "answer": 0}, post_prompt="answer_directly")
    assert directly.question_text == ("q\nA. a\nB. b\nC. c\nD. d\nE. e"
                                      "\nAnswer with the option's letter from the given choices directly.")
    mcq = only_item("mcq", {"id": "q1", "video": "clips/a.mp4", "question": "Which colour?",
                            "options": ["red", "green"], "answer": "green"})
    assert mcq.question_text == "Which colour?\nA. red\nB. green\nAnswer with the option's letter from the given choices directly."
    assert mcq.gold == "B"
    assert only_item("mcq", {"id": "q2", "video": "a.mp4", "question": "?", "options": ["A. x", "B. y"], "answer": 0}).gold == "A"


def test_unusable_rows_become_bad_rows_with_reasons():
    rows = [dict(VIDEOMME_ROW, answer="E"), {k: v for k, v in VIDEOMME_ROW.items() if k != "question"},
            VIDEOMME_ROW, dict(VIDEOMME_ROW)]
    items, bad = tasks.build_items("videomme", rows)
    assert [it.id for it in items] == ["001-1"]
    assert [(b.row_index, b.reason) for b in bad] == [(0, "answer_not_in_options"), (1, "missing_field:question"),
                                                     (3, "duplicate_id")]
    assert bad[2].id is None  # a repeated id must not take the first row's result key


def _row(task_type, correct, status="ok"):
    return {"status": status, "correct": correct, "parsed": "A" if correct else "B", "groups": {"task_type": task_type}}


def test_mlvu_m_avg_is_the_mean_of_task_accuracies_and_skips_count_as_wrong():
    # plotQA 3/4, count 0/1, needle 1/1 (+1 missing video): micro 4/7, M-avg (3/4 + 0 + 1/2) / 3.
    rows = [_row("plotQA", True)] * 3 + [_row("plotQA", False), _row("count", False), _row("needle", True),
                                         _row("needle", False, status="missing_video")]
    s = scoring.score("mlvu", rows)
    assert s["total"] == 7 and s["correct"] == 4 and s["accuracy"] == pytest.approx(4 / 7)
    assert s["m_avg"] == pytest.approx((0.75 + 0.0 + 0.5) / 3) and s["headline"] == "m_avg"
    assert s["skipped_by_reason"] == {"missing_video": 1} and s["skipped_count_as_wrong"]
    assert s["groups"]["task_type"]["needle"] == {"correct": 1, "total": 2, "accuracy": 0.5}


def test_fallback_letter_is_seeded_per_item():
    letters = ("A", "B", "C", "D", "E")
    draws = [scoring.fallback_letter("longvideobench", f"q{i}", letters, 0) for i in range(40)]
    assert draws == [scoring.fallback_letter("longvideobench", f"q{i}", letters, 0) for i in range(40)]
    assert set(draws) == set(letters)  # 40 draws cover every letter
    assert draws != [scoring.fallback_letter("longvideobench", f"q{i}", letters, 1) for i in range(40)]


def test_loaders_read_parquet_json_and_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [VIDEOMME_ROW, dict(VIDEOMME_ROW, question_id="001-2")]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "t.parquet"))
    (tmp_path / "t.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("t.parquet", "t.json", "t.jsonl"):
        assert tasks.load_rows(str(tmp_path / name)) == rows, name
    with pytest.raises(FileNotFoundError, match="no such benchmark file"):
        tasks.load_rows(str(tmp_path / "missing.json"))
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(ValueError, match="unknown benchmark file type '.csv'"):
        tasks.load_rows(str(tmp_path / "t.csv"))


def test_mlvu_release_rows_get_the_release_question_template(tmp_path):
    """MLVU's own release (json/<n>_<task>.json: video, question, candidates, the answer as
    text, question_type) asks "Question: ...\\nOptions:\\n(A) ..." (its qa_template) with the
    task's post prompt; the gold letter is the candidate equal to the answer. A folder as --data
    reads every row file in it in name order."""
    row = {"video": "movie101_66.mp4", "duration": 246, "question": "What color is the main male character's coat?",
           "candidates": ["Yellow", "Red", "Green", "Blue "], "answer": "Green", "question_type": "plotQA"}
    item = only_item("mlvu", row)
    assert item.question_text == ("Question: What color is the main male character's coat?\nOptions:\n(A) Yellow\n"
                                  "(B) Red\n(C) Green\n(D) Blue" "\nOnly give the best option.\nBest option: (")
    assert item.letters == ("A", "B", "C", "D") and item.gold == "C" and item.groups == {"task_type": "plotQA"}
    assert item.id == "movie101_66.mp4#0" and item.options == ("Yellow", "Red", "Green", "Blue ")
    assert tasks.video_candidates(item) == ["movie101_66.mp4", "1_plotQA/movie101_66.mp4",
                                            "video/1_plotQA/movie101_66.mp4"]  # the release's video/1_plotQA/
    _, bad = tasks.build_items("mlvu", [dict(row, answer="Purple"), dict(row, candidates=["only"])])
    assert [b.reason for b in bad] == ["answer_not_in_options", "bad_options"]

    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "2_needle.json").write_text(json.dumps([dict(row, question_type="needle", answer="Red")]))
    (folder / "1_plotQA.json").write_text(json.dumps([row]))
    (folder / "README.txt").write_text("not rows")
    items, bad = tasks.build_items("mlvu", tasks.load_rows(str(folder)))
    assert not bad and [(i.id, i.gold, i.groups["task_type"]) for i in items] == [
        ("movie101_66.mp4#0", "C", "plotQA"), ("movie101_66.mp4#1", "B", "needle")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder with no .parquet/.json/.jsonl file"):
        tasks.load_rows(str(tmp_path / "empty"))

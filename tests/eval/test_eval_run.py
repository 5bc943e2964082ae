"""leanpo-eval end to end on a tiny checkpoint and the embedded synthetic Video-MME benchmark:
every row gets a result (unusable rows and missing videos counted as wrong, with their reason),
scores.json agrees with results.jsonl, and a run killed with SIGKILL (and left with a torn last
line) resumes to the same results and scores.json as the uninterrupted run."""

import json
import os
import shutil
import signal
import sys

import pytest

from conftest import run_cli, sigkill_after_lines
from leanpo_jax.eval import report as report_lib
from leanpo_jax.eval.run import Evaluator, cut_at_stops, run_tasks
from leanpo_jax.eval.synthetic import write_synthetic_videomme
from leanpo_jax.train.config import training_config
from tiny_checkpoint import make_checkpoint


def eval_config(ckpt, data, video_root, **benchmark):
    config = training_config()
    config.model.init_from = ckpt
    config.data.num_frames = 4
    config.eval.benchmark.update(dict(task="videomme", data=data, video_root=video_root, batch_size=4))
    config.eval.benchmark.update(benchmark)
    return config


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ckpt = make_checkpoint(str(root / "ckpt"))
    info = write_synthetic_videomme(str(root / "bench"), num_videos=3, frames=8, size=32)
    rows = json.load(open(info["data"]))
    assert len(rows) == info["questions"] == 9
    # Two rows that cannot count as answered: an answer outside the options, a missing video.
    rows.append(dict(rows[0], question_id="bad-answer", answer="E"))
    rows.append(dict(rows[1], question_id="no-video", videoID="not-there"))
    with open(info["data"], "w") as f:
        json.dump(rows, f)
    out = str(root / "full")
    config = eval_config(ckpt, info["data"], info["video_root"])
    result = Evaluator(config).run(out, progress=False)
    return dict(ckpt=ckpt, info=info, out=out, result=result, root=root)


def read_results(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_every_row_has_a_result_and_the_scores_count_them(bench):
    rows = read_results(bench["out"])
    assert len(rows) == 11 and len({r["id"] for r in rows}) == 11
    status = {r["item_id"] if r.get("item_id") else r["id"]: r["status"] for r in rows}
    assert status["no-video"] == "missing_video"
    assert [r["status"] for r in rows if r["status"] not in ("ok", "missing_video")] == ["answer_not_in_options"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 9
    for r in ok:
        assert r["question_text"].startswith("Select the best answer to the following multiple-choice question")
        assert len(r["prompt_sha256"]) == 64 and r["extractor"] == "lmms-eval-2024"
        assert r["correct"] == (r["parsed"] == r["gold"]) and r["gold"] in "ABCD"
    s = bench["result"]
    assert s["total"] == 11 and s["correct"] == sum(r["correct"] for r in rows)
    assert s["accuracy"] == pytest.approx(s["correct"] / 11)
    assert s["skipped"] == 2 and s["skipped_by_reason"] == {"answer_not_in_options": 1, "missing_video": 1}
    assert s["settings"]["num_frames"] == 4 and s["settings"]["extractor"] == "lmms-eval-2024"
    scores = report_lib.read_scores(bench["out"])
    assert set(scores) == {"videomme"} and scores["videomme"]["total"] == 11
    assert "evaluated_this_run" not in scores["videomme"]
    text = open(os.path.join(bench["out"], "report.md")).read()
    assert "## videomme" in text and "lmms-eval-2024" in text and "missing_video: 1" in text
    assert os.path.getsize(os.path.join(bench["out"], "accuracy.png")) > 1000


def test_a_run_killed_with_sigkill_resumes_to_the_same_scores(bench):
    """A real kill -9 mid-run (one question per batch, 54 questions), then a torn half line as a
    kill during a write leaves it; the resumed CLI run answers only what is missing and its
    results.jsonl and scores.json equal an uninterrupted run's."""
    info, root = bench["info"], bench["root"]
    rows = json.load(open(info["data"]))[:9]
    data = str(root / "many.json")
    with open(data, "w") as f:
        json.dump([dict(r, question_id=f"{r['question_id']}-{k}") for k in range(6) for r in rows], f)
    full, resumed = str(root / "many_full"), str(root / "many_resumed")
    want_scores = Evaluator(eval_config(bench["ckpt"], data, info["video_root"], batch_size=1)).run(full, progress=False)
    assert want_scores["total"] == 54 and want_scores["skipped"] == 0
    # Through --tasks (one task here): the per-task --data / --video-root lists.
    args = ["-m", "leanpo_jax.eval", "--model", bench["ckpt"], "--tasks", "videomme", "--data", data,
            "--video-root", info["video_root"], "--out", resumed, "--noprogress",
            "--config.data.num_frames=4", "--config.eval.benchmark.batch_size=1"]
    results = os.path.join(resumed, "results.jsonl")
    code, output = sigkill_after_lines([sys.executable, *args], results, 4)
    assert code == -signal.SIGKILL, output
    with open(results, "rb") as f:
        kept = f.read()
    written = kept.count(b"\n")
    assert 4 <= written < 54
    with open(os.path.join(full, "results.jsonl"), "rb") as f:
        lines = f.readlines()
    done = {json.loads(line)["id"] for line in kept.splitlines() if line.endswith(b"}")}
    torn = next(line for line in lines if json.loads(line)["id"] not in done)
    with open(results, "ab") as f:
        f.write(torn[:30])
    proc = run_cli(args, timeout=600)
    assert f"videomme: {54 - written} questions answered this run" in proc.stdout
    got, want = read_results(resumed), read_results(full)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in want)
    by_id = {r["id"]: r for r in want}
    for r in got:
        assert r == by_id[r["id"]], r["id"]
    assert open(os.path.join(resumed, "scores.json")).read() == open(os.path.join(full, "scores.json")).read()
    # Rerun with everything written: nothing new, the same scores.
    again = Evaluator(eval_config(bench["ckpt"], data, info["video_root"], batch_size=1)).run(resumed, progress=False)
    assert again["evaluated_this_run"] == 0
    assert open(os.path.join(resumed, "scores.json")).read() == open(os.path.join(full, "scores.json")).read()


def test_likelihood_scoring_picks_the_most_likely_option_letter(bench):
    info = bench["info"]
    out = str(bench["root"] / "likelihood")
    config = eval_config(bench["ckpt"], info["data"], info["video_root"], scoring="likelihood", max_items=4)
    result = Evaluator(config).run(out, progress=False)
    rows = [r for r in read_results(out) if r["status"] == "ok"]
    assert len(rows) == 4 and result["total"] == 4
    for r in rows:
        logps = r["letter_logps"]
        assert sorted(logps) == ["A", "B", "C", "D"] and all(v < 0 for v in logps.values())
        assert r["parsed"] == max(logps, key=logps.get) and r["extractor"] == "likelihood"
        assert len(set(logps.values())) == 4  # distinct letters, distinct scores
    assert result["correct"] == sum(r["parsed"] == r["gold"] for r in rows)


def test_settings_errors_name_the_key(tmp_path):
    from leanpo_jax.train.config import check_combinations

    config = training_config()
    config.eval.benchmark.every = 5
    with pytest.raises(ValueError, match="eval.benchmark.every.*needs eval.benchmark.task"):
        check_combinations(config, num_devices=1)
    config.eval.benchmark.update(dict(task="videomme", data="bench.json"))
    check_combinations(config, num_devices=1)
    with pytest.raises(ValueError, match="eval.benchmark.every.*one process"):
        check_combinations(config, num_devices=1, process_count=2)
    config.eval.benchmark.task = "videome"
    with pytest.raises(ValueError, match="eval.benchmark.task='videome': expected one of"):
        Evaluator(config)


def test_answers_are_cut_at_the_first_stop_string():
    assert cut_at_stops("B. pushed\n\nBecause he", ("\n\n",)) == "B. pushed"
    assert cut_at_stops("A\nB\n\nC", ("\n\n", "\n")) == "A"  # the earliest of several
    assert cut_at_stops("The answer is C", ("\n\n",)) == "The answer is C"
    assert cut_at_stops("anything", ()) == "anything"


def test_several_tasks_share_one_model_and_one_output_folder(bench, tmp_path):
    """run_tasks (the CLI's --tasks): Video-MME, an MCQ file and MLVU's release folder (json/
    as --data, its videos found under the folder above) on one model load into one folder: the
    Video-MME entry equals the single-task run's, all tasks' rows share results.jsonl,
    scores.json holds all three; a task named twice is refused."""
    info, out = bench["info"], str(tmp_path / "both")
    videos = sorted(os.listdir(info["video_root"]))[:2]
    with open(tmp_path / "mcq.jsonl", "w") as f:
        for i, name in enumerate(videos):
            f.write(json.dumps({"id": f"m{i}", "video": name, "question": "Is it moving?", "options": ["yes", "no"],
                                "answer": "yes"}) + "\n")
    # MLVU as its release lays it out: json/<n>_<task>.json rows, videos in video/<n>_<task>/.
    mlvu = tmp_path / "MLVU"
    (mlvu / "json").mkdir(parents=True)
    for task, folder in (("plotQA", "1_plotQA"), ("count", "4_count")):
        (mlvu / "video" / folder).mkdir(parents=True)
        shutil.copy(os.path.join(info["video_root"], videos[0]), mlvu / "video" / folder / videos[0])
        (mlvu / "json" / f"{folder}.json").write_text(json.dumps([
            {"video": videos[0], "question": "What moves?", "candidates": ["a ball", "a box"], "answer": "a box",
             "question_type": task}]))
    config = eval_config(bench["ckpt"], info["data"], info["video_root"])
    results = run_tasks(config, [{"task": "videomme"}, {"task": "mcq", "data": str(tmp_path / "mcq.jsonl")},
                                 {"task": "mlvu", "data": str(mlvu / "json"), "video_root": ""}], out, progress=False)
    assert results["mcq"]["total"] == 2 and results["mcq"]["skipped"] == 0
    assert results["mlvu"]["total"] == 2 and results["mlvu"]["skipped"] == 0  # both videos found under MLVU/
    scores = report_lib.read_scores(out)
    assert sorted(scores) == ["mcq", "mlvu", "videomme"]
    assert sorted(scores["mlvu"]["groups"]["task_type"]) == ["count", "plotQA"]
    assert scores["videomme"] == report_lib.read_scores(bench["out"])["videomme"]
    assert sorted({r["task"] for r in read_results(out)}) == ["mcq", "mlvu", "videomme"]
    with pytest.raises(ValueError, match="appears twice"):
        run_tasks(config, [{"task": "mcq"}, {"task": "mcq"}], out, progress=False)


def test_the_tasks_flag_pairs_each_task_with_its_file():
    from absl.testing import flagsaver

    from leanpo_jax.eval import __main__ as cli

    with flagsaver.flagsaver(tasks=["videomme", "mlvu"], data="a.parquet,b.json", **{"video-root": "/v"}):
        assert cli._benchmarks(None) == [{"task": "videomme", "data": "a.parquet", "video_root": "/v"},
                                         {"task": "mlvu", "data": "b.json", "video_root": "/v"}]
    with flagsaver.flagsaver(tasks=["videomme", "mlvu"], data="a.parquet"):
        with pytest.raises(ValueError, match="2 tasks but --data 1 files"):
            cli._benchmarks(None)
    with flagsaver.flagsaver(tasks=["videomme"], task="mlvu", data="a.parquet"):
        with pytest.raises(ValueError, match="not both"):
            cli._benchmarks(None)


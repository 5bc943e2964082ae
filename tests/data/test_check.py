"""The dataset checker CLI: same code path as training, last stdout line JSON, any cwd."""

import json
import os

import pytest

from leanpo_jax.data import check, records, synthetic


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Synthetic records plus one line of three bad kinds (malformed, missing video, too long)."""
    root = str(tmp_path_factory.mktemp("check_data"))
    synthetic.generate(root, 3, seed=1, num_frames_video=8, size=32)
    with open(os.path.join(root, "pairs.jsonl")) as f:
        good = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(root, "mixed.jsonl"), "w") as f:
        for row in good:
            f.write(json.dumps(row) + "\n")
        f.write("{not json\n\n")
        f.write(json.dumps({**good[0], "id": "gone", "video": "videos/gone.mp4"}) + "\n")
        f.write(json.dumps({**good[0], "id": "long", "prompt": "why " * 300}) + "\n")
    return root, len(good)


def test_checker_cli_from_another_directory(folder, tmp_path, run_cli):
    root, n_good = folder
    out = tmp_path / "skipped.jsonl"
    proc = run_cli(["-m", "leanpo_jax.data.check", "--pairs", os.path.join(root, "mixed.jsonl"),
                    "--video-root", root, "--skipped-out", str(out), "--max-skipped-fraction", "0.5"],
                   cwd=str(tmp_path))  # 3 of 6 skipped: at (not above) the raised threshold
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    skipped = {records.MALFORMED_JSON: 1, records.MISSING_VIDEO: 1, records.PROMPT_TOO_LONG: 1}
    assert result == {"records": n_good + 3, "ok": n_good, "skipped": skipped}
    assert result["ok"] + sum(result["skipped"].values()) == result["records"]
    listed = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(x["reason"] for x in listed) == sorted(skipped)
    assert "gone" in proc.stdout and "Fix:" in proc.stdout  # the summary names bad records


def test_checker_with_a_config_file_and_strict_exit(folder, tmp_path, run_cli):
    root, n_good = folder
    config = tmp_path / "cfg.py"
    config.write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        f"    c.data = ml_collections.ConfigDict({check.default_data_config().to_dict()!r})\n"
        "    c.data.num_frames = 2\n"
        "    c.data.max_prompt_text_tokens = 2000\n"
        "    return c\n")
    proc = run_cli(["-m", "leanpo_jax.data.check", "--pairs", os.path.join(root, "mixed.jsonl"),
                    "--config", str(config), "--strict"], cwd=str(tmp_path), check=False)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The long prompt fits the raised limit; 2 frames still read through the same path.
    assert result == {"records": n_good + 3, "ok": n_good + 1,
                      "skipped": {records.MALFORMED_JSON: 1, records.MISSING_VIDEO: 1}}


def test_checker_fails_above_the_skip_threshold_and_when_nothing_is_usable(folder, tmp_path, capsys):
    root, n_good = folder
    mixed = os.path.join(root, "mixed.jsonl")
    # 3 of 6 records skipped > the default data.max_skipped_fraction 0.1 (6 records < the
    # check's minimum of 20: a short file is judged on all of its records).
    assert check.main(["--pairs", mixed, "--video-root", root]) == 1
    err = capsys.readouterr().err
    assert "3 of 6 records skipped (50.0%)" in err and "data.max_skipped_fraction=0.1" in err
    assert check.main(["--pairs", mixed, "--video-root", root, "--max-skipped-fraction", "0.5"]) == 0
    capsys.readouterr()
    # A wrong video root: every record skipped, whatever the threshold.
    assert check.main(["--pairs", os.path.join(root, "pairs.jsonl"), "--video-root", str(tmp_path),
                       "--max-skipped-fraction", "1.0"]) == 1
    captured = capsys.readouterr()
    assert f"{n_good} of {n_good} records skipped (100.0%): missing_video {n_good}" in captured.err
    assert "no record was usable" in captured.err and "data.video_root" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["ok"] == 0

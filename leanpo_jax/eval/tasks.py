"""Benchmark rows -> evaluation items: the prompt exactly as lmms-eval's doc_to_text builds it.

    rows = load_rows("videomme/test.parquet")                 # parquet, json or jsonl, local only
    items, bad = build_items("videomme", rows)                # EvalItem per usable row, BadRow per other

A row that cannot be asked (a field missing, an answer outside its options) becomes a BadRow
with a machine-readable reason; nothing raises, nothing is dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Tuple

LETTERS = "ABCDE"
VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and "
                        "the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
ANSWER_DIRECTLY = "Answer with the option's letter from the given choices directly."
# lmms-eval's per-model post prompts (model_specific / lmms_eval_specific kwargs of the task
# yamls): Video-MME videomme.yaml (the code falls back to "The best answer is:" when a yaml sets
# none), MLVU mlvu_dev.yaml (mlvu_test.yaml sets none), LongVideoBench longvideobench_val_v.yaml;
# nextqa_mc_test.yaml sets none, so NExT-QA MC's prompt ends with the last option.
VIDEOMME_POSTS = {"default": "\n" + ANSWER_DIRECTLY, "llava_vid": "The best answer is:",
                  "gpt4v": "Answer the question with A, B, C, or D.", "no_kwargs": "The best answer is:"}
MLVU_POSTS = {"default": "\nOnly give the best option.\nBest option: (", "plm": "\nOnly give the best option.",
              "test": ""}
LVB_POSTS = {"default": ANSWER_DIRECTLY + "\n"}
NEXTQA_POSTS = {"default": "", "answer_directly": "\n" + ANSWER_DIRECTLY}
MCQ_POSTS = {"default": ANSWER_DIRECTLY}


@dataclasses.dataclass(frozen=True)
class EvalItem:
    id: str  # unique within its task
    task: str
    video: str  # as the benchmark names it; `video_candidates` gives the paths tried
    question_text: str  # the benchmark prompt before any chat template
    letters: tuple  # the valid option letters
    gold: str
    groups: dict  # the fields the task's scores are broken down by
    options: tuple = ()  # the option texts without their letters


@dataclasses.dataclass(frozen=True)
class BadRow:
    task: str
    row_index: int
    id: Optional[str]
    reason: str  # e.g. "missing_field:question", "answer_not_in_options"
    detail: str


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    build: Callable  # (row, index, post_prompt) -> EvalItem (raises _Bad)
    max_new_tokens: int
    # lmms-eval's post prompts by name ("default" and its per-model variants), the text after
    # the options; eval.benchmark.post_prompt picks one by name or gives a literal text.
    post_prompts: Dict[str, str]
    group_fields: Tuple[str, ...]
    headline: str = "accuracy"  # the figure the benchmark reports
    random_fallback: bool = False  # an unparsable answer gets a seeded random letter
    extensions: Tuple[str, ...] = ()  # other file endings to try for the video
    # The answer is cut at the first of these (lmms-eval's generation "until"; the chat
    # template's stop token ends it in any case).
    stop_strings: Tuple[str, ...] = ()
    # Folders (relative to the video root) the video may also sit in: how the downloaded
    # releases lay their videos out, besides the flat folder lmms-eval reads.
    video_dirs: Callable = lambda item: ()


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


ROW_FILE_TYPES = (".parquet", ".json", ".jsonl")


def load_rows(path: str) -> List[Dict]:
    """Every row of a local .parquet (pyarrow), .json (a list, or {"data": list}) or .jsonl file;
    of a folder, every such file in it in name order (MLVU's release: json/1_plotQA.json ...)."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in ROW_FILE_TYPES)
        if not names:
            raise FileNotFoundError(f"{path}: a folder with no {'/'.join(ROW_FILE_TYPES)} file "
                                    "(--data / eval.benchmark.data)")
        return [row for name in names for row in load_rows(os.path.join(path, name))]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such benchmark file or folder (--data / eval.benchmark.data)")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        try:
            import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise ValueError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        if ext == ".jsonl":
            return [json.loads(line) for line in f if line.strip()]
        if ext == ".json":
            data = json.load(f)
            data = data.get("data", data) if isinstance(data, dict) else data
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a JSON list of rows (or {{\"data\": [...]}})")
            return data
    raise ValueError(f"{path}: unknown benchmark file type {ext!r}; use .parquet, .json or .jsonl")


def _field(row: Dict, name: str):
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Bad(f"missing_field:{name}", f"the row has no {name!r}")
    return value


def _videomme(row: Dict, index: int, post_prompt: str) -> EvalItem:
    options = list(_field(row, "options"))
    question, answer = str(_field(row, "question")), str(_field(row, "answer")).strip()
    letters = tuple(LETTERS[:len(options)])
    if answer not in letters:
        raise _Bad("answer_not_in_options", f"answer {answer!r} is not one of {letters}")
    text = VIDEOMME_INSTRUCTION + "\n" + question + "\n" + "\n".join(str(o) for o in options) + "\n" + post_prompt
    texts = tuple(str(o)[3:] if str(o)[1:3] == ". " else str(o) for o in options)
    return EvalItem(str(_field(row, "question_id")), "videomme", str(_field(row, "videoID")) + ".mp4", text, letters,
                    answer, {k: str(row.get(k, "")) for k in ("duration", "domain", "task_type")}, texts)


def _mcq(row: Dict, index: int, post_prompt: str) -> EvalItem:
    options = [str(o) for o in _field(row, "options")]
    if not 2 <= len(options) <= len(LETTERS):
        raise _Bad("bad_options", f"{len(options)} options; expected 2 to {len(LETTERS)}")
    letters = tuple(LETTERS[:len(options)])
    texts = tuple(o[3:] if o[:1] in letters and o[1:3] == ". " else o for o in options)
    answer = _field(row, "answer")
    if isinstance(answer, int) and not isinstance(answer, bool):
        gold = letters[answer] if 0 <= answer < len(letters) else None
    else:
        answer = str(answer).strip()
        gold = answer if answer in letters else (letters[texts.index(answer)] if answer in texts else None)
    if gold is None:
        raise _Bad("answer_not_in_options", f"answer {answer!r} is neither a letter of {letters}, an index nor an option")
    lines = [str(_field(row, "question"))] + [f"{x}. {t}" for x, t in zip(letters, texts)]
    text = "\n".join(lines) + "\n" + post_prompt
    groups = {"task_type": str(row["task_type"])} if row.get("task_type") else {}
    return EvalItem(str(_field(row, "id")), "mcq", str(_field(row, "video")), text, letters, gold, groups, texts)


def mlvu_release_question(question: str, candidates) -> str:
    """MLVU's own question template (its release's qa_template, the form the lmms-eval rows'
    `question` holds): "Question: q\nOptions:\n(A) c0\n(B) c1", trailing whitespace stripped."""
    lines = [f"Question: {question}", "Options:"] + [f"({x}) {c}" for x, c in zip(LETTERS, candidates)]
    return "\n".join(lines).rstrip()


def _mlvu_release(row: Dict, index: int, post_prompt: str) -> EvalItem:
    # A row of MLVU's release json (video, question, candidates, answer as text, question_type).
    candidates = [str(c) for c in _field(row, "candidates")]
    if not 2 <= len(candidates) <= len(LETTERS):
        raise _Bad("bad_options", f"{len(candidates)} candidates; expected 2 to {len(LETTERS)}")
    letters, answer = tuple(LETTERS[:len(candidates)]), str(_field(row, "answer"))
    if answer in candidates:  # the release's rule: the candidate equal to the answer
        gold = letters[candidates.index(answer)]
    elif answer.strip() in letters:
        gold = answer.strip()
    else:
        raise _Bad("answer_not_in_options", f"answer {answer!r} is none of the candidates {candidates}")
    video = str(row.get("video_name") or _field(row, "video"))
    task_type = str(row.get("task_type") or _field(row, "question_type"))
    text = mlvu_release_question(str(_field(row, "question")), candidates) + post_prompt
    rid = str(row.get("question_id") or row.get("id") or f"{video}#{index}")
    return EvalItem(rid, "mlvu", video, text, letters, gold, {"task_type": task_type}, tuple(candidates))


def _mlvu(row: Dict, index: int, post_prompt: str) -> EvalItem:
    if row.get("candidates") is not None and len(row["candidates"]):
        return _mlvu_release(row, index, post_prompt)
    # lmms-eval's rows: the question already lists its options ("(A) ..."); letters read from it.
    question, answer = str(_field(row, "question")), str(_field(row, "answer")).strip()
    letters = tuple(x for x in LETTERS if f"({x})" in question) or tuple(LETTERS[:4])
    answer = answer[1] if len(answer) == 3 and answer[0] == "(" and answer[2] == ")" else answer
    if answer not in letters:
        raise _Bad("answer_not_in_options", f"answer {answer!r} is not one of {letters}")
    text = question + post_prompt
    rid = str(row.get("question_id") or row.get("id") or f"{_field(row, 'video_name')}#{index}")
    return EvalItem(rid, "mlvu", str(_field(row, "video_name")), text, letters, answer,
                    {"task_type": str(_field(row, "task_type"))})


def _longvideobench(row: Dict, index: int, post_prompt: str) -> EvalItem:
    # Options "N/A" are absent; the others are lettered in order.
    options = [str(row[f"option{i}"]) for i in range(5) if row.get(f"option{i}") not in (None, "N/A")]
    if len(options) < 2:
        raise _Bad("bad_options", f"{len(options)} options besides N/A")
    letters = tuple(LETTERS[:len(options)])
    choice = _field(row, "correct_choice")
    if not isinstance(choice, int) or not 0 <= choice < len(options):
        raise _Bad("answer_not_in_options", f"correct_choice {choice!r} is not an index of the {len(options)} options")
    lines = [str(_field(row, "question"))] + [f"{x}. {o}" for x, o in zip(letters, options)]
    text = "\n".join(lines) + "\n" + post_prompt
    return EvalItem(str(_field(row, "id")), "longvideobench", str(_field(row, "video_path")), text, letters,
                    letters[choice], {k: str(row.get(k, "")) for k in ("duration_group", "question_category")},
                    tuple(options))


def _nextqa(row: Dict, index: int, post_prompt: str) -> EvalItem:
    options = [str(_field(row, f"a{i}")).strip() for i in range(5)]
    answer = _field(row, "answer")
    if not isinstance(answer, int) or not 0 <= answer < 5:
        raise _Bad("answer_not_in_options", f"answer {answer!r} is not an index 0-4 of a0..a4")
    lines = [str(_field(row, "question")).strip()] + [f"{x}. {o}" for x, o in zip(LETTERS, options)]
    text = "\n".join(lines) + post_prompt
    rid = str(row.get("qid") if row.get("qid") is not None else f"{_field(row, 'video')}#{index}")
    return EvalItem(rid, "nextqa", f"{_field(row, 'video')}.mp4", text, tuple(LETTERS), LETTERS[answer],
                    {"type": str(row.get("type", ""))}, tuple(options))


# The MLVU release keeps each task type's videos in a numbered folder (video/1_plotQA/...).
MLVU_FOLDERS = {"plotQA": "1_plotQA", "needle": "2_needle", "ego": "3_ego", "count": "4_count", "order": "5_order",
                "anomaly_reco": "6_anomaly_reco", "topic_reasoning": "7_topic_reasoning"}


def _mlvu_dirs(item: EvalItem) -> Tuple[str, ...]:
    folder = MLVU_FOLDERS.get(item.groups.get("task_type", ""))
    return (folder, os.path.join("video", folder)) if folder else ()


TASKS: Dict[str, TaskSpec] = {
    # The hub snapshot keeps Video-MME's videos in data/.
    "videomme": TaskSpec(_videomme, 16, VIDEOMME_POSTS, ("duration", "domain", "task_type"),
                         extensions=(".MP4", ".mkv"), video_dirs=lambda item: ("data",)),
    "mlvu": TaskSpec(_mlvu, 16, MLVU_POSTS, ("task_type",), headline="m_avg", video_dirs=_mlvu_dirs),
    "longvideobench": TaskSpec(_longvideobench, 32, LVB_POSTS, ("duration_group", "question_category"),
                               random_fallback=True),
    # No generation_kwargs in nextqa_mc_test.yaml: lmms-eval's defaults, stop at "\n\n" and the
    # LLaVA wrappers' 1024 new tokens.
    "nextqa": TaskSpec(_nextqa, 1024, NEXTQA_POSTS, ("type",), random_fallback=True, stop_strings=("\n\n",)),
    "mcq": TaskSpec(_mcq, 16, MCQ_POSTS, ("task_type",)),
}


def resolve_post_prompt(task: str, post_prompt: Optional[str]) -> str:
    """None or "default" -> the task's lmms-eval default; a name of its table -> that variant;
    anything else is the text itself."""
    table = TASKS[task].post_prompts
    return table.get("default" if post_prompt is None else post_prompt, post_prompt)


def build_items(task: str, rows: List[Dict], *, post_prompt: Optional[str] = None) -> Tuple[List[EvalItem], List[BadRow]]:
    """The task's items and the rows that could not become one (in file order); ids repeated
    within the file are BadRows too (each result row is keyed by its id). `post_prompt`: see
    `resolve_post_prompt`."""
    spec = TASKS[task]
    post_prompt = resolve_post_prompt(task, post_prompt)
    items, bad, seen = [], [], set()
    for i, row in enumerate(rows):
        rid = None
        try:
            item = spec.build(row, i, post_prompt)
            rid = item.id
            if rid in seen:
                raise _Bad("duplicate_id", f"id {rid!r} appears earlier in the file")
            seen.add(rid)
            items.append(item)
        except _Bad as e:
            # A repeated id is reported by row index: its result row must not take the first's key.
            keep_id = e.reason != "duplicate_id"
            bad.append(BadRow(task, i, (rid if rid is not None else _row_id(row)) if keep_id else None, e.reason,
                              e.detail))
    return items, bad


def _row_id(row: Dict) -> Optional[str]:
    for key in ("question_id", "id", "qid"):
        if row.get(key) is not None:
            return str(row[key])
    return None


def video_candidates(item: EvalItem) -> List[str]:
    """Relative paths to try for the item's video, in order: the name as given, its other file
    endings, then the same names in the task's release folders."""
    spec = TASKS[item.task]
    stem, ext = os.path.splitext(item.video)
    names = [item.video] + [stem + other for other in spec.extensions if other != ext]
    return names + [os.path.join(folder, name) for folder in spec.video_dirs(item) for name in names]

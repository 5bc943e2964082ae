"""data.skip_budget: when a run with skipped records stops, and what it says."""

import ml_collections

from leanpo_jax.data.config import data_config
from leanpo_jax.data.skip_budget import SkipBudget, describe_skips


def test_describe_names_count_share_top_reasons_and_the_list():
    reasons = {"missing_video": 5, "prompt_too_long": 2, "malformed_json": 2, "bad_video": 1}
    text = describe_skips(40, 10, reasons, "W/skipped_records.jsonl")
    assert text.startswith("10 of 40 records skipped (25.0%): missing_video 5, malformed_json 2, "
                           "prompt_too_long 2, 1 more reason(s)")
    assert text.endswith("listed in W/skipped_records.jsonl")
    assert describe_skips(8, 0, {}, "W/x.jsonl") == "0 of 8 records skipped (0.0%)"


def test_budget_waits_for_the_minimum_then_stops_above_the_fraction():
    budget = SkipBudget(0.1, 20)
    assert budget.verdict(10, 5) is None  # 50% but only 10 records read
    assert budget.verdict(20, 2) is None  # exactly 10%: not above
    message = budget.verdict(20, 3, {"missing_video": 3})
    assert message.startswith("3 of 20 records skipped (15.0%): missing_video 3: more than "
                              "data.max_skipped_fraction=0.1")
    assert "data.video_root" in message
    assert "no record was usable" in budget.verdict(2, 2)  # at once, before the minimum
    assert SkipBudget(1.0, 20).verdict(100, 99) is None
    assert SkipBudget(1.0, 20).verdict(100, 100) is not None


def test_from_config_judges_a_short_run_on_all_its_records():
    data = data_config()
    assert SkipBudget.from_config(data) == SkipBudget(0.1, 20)
    assert SkipBudget.from_config(data, planned_records=8) == SkipBudget(0.1, 8)
    data = ml_collections.ConfigDict({"max_skipped_fraction": 0.5, "skip_check_min_records": 4})
    assert SkipBudget.from_config(data, planned_records=100) == SkipBudget(0.5, 4)

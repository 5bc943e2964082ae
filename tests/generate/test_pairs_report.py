"""generate/report.py on constructed rows: identical pairs are counted apart and the
"winner > loser" share is taken over the pairs whose sides differ."""

from leanpo_jax.generate import report as report_lib


def _row(i, chosen, rejected, *, identical=False, answer=-0.5):
    return {"id": f"r{i}", "chosen_avg_logp": chosen, "rejected_avg_logp": rejected,
            "answer_avg_logp": answer, "identical": identical}


ROWS = [
    _row(0, -0.1, -0.3), _row(1, -0.2, -0.4), _row(2, -0.5, -0.2),  # 2 of 3 differing pairs win
    # Identical pairs: equal scores now, but even a stray ulp must not count as a win.
    _row(3, -0.3, -0.3, identical=True), _row(4, -0.30000001, -0.3, identical=True),
    _row(5, -0.29999999, -0.3, identical=True), _row(6, -0.7, -0.7, identical=True),
]


def test_report_counts_identical_pairs_and_the_share_over_the_others():
    report = report_lib.build_report(ROWS, failed=2, failed_by_reason={"unreadable_video": 2})
    assert report["pairs"] == 7 and report["failed"] == 2
    assert report["identical_pairs"] == 4 and report["identical_ids"] == ["r3", "r4", "r5", "r6"]
    assert report["non_identical_pairs"] == 3
    assert report["winner_above_loser_non_identical"] == {"count": 2, "share": 2 / 3}
    # The overall share, under a name that says what it counts: 3 of 7 (r5's ulp counts there).
    assert report["winner_above_loser_all_pairs"] == 3 / 7
    assert "winner_above_loser" not in report  # the old, ambiguous key
    assert abs(report["mean_avg_logp"]["winner"] - sum(r["chosen_avg_logp"] for r in ROWS) / 7) < 1e-12


def test_printed_table_gives_the_identical_count_and_the_non_identical_share():
    table = report_lib.format_report(report_lib.build_report(ROWS))
    header, _, row = table.splitlines()
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["identical pairs"] == "4"
    assert cells["winner > loser (non-identical)"] == "2/3 (66.7%)"
    assert cells["data"] == "self-generated (7 pairs)"


def test_no_differing_pair_reports_no_share():
    report = report_lib.build_report([_row(0, -0.3, -0.3, identical=True)])
    assert report["winner_above_loser_non_identical"] == {"count": 0, "share": None}
    assert "n/a" in report_lib.format_report(report)
    assert report_lib.build_report([])["winner_above_loser_all_pairs"] is None

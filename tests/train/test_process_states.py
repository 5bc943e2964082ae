"""train.process_states on one process (two processes: tests/train/test_trainer.py resume test)."""

import pytest

from leanpo_jax.train import process_states


def test_one_process_keeps_the_plain_state_and_selects_its_own_entry():
    state = {"next_step": 4, "fingerprint": {"process_index": 0}}
    assert process_states.gather(state) is state  # single-process checkpoints keep their format
    assert process_states.select(state) is state  # and older ones stay readable
    saved = {"process_count": 1, "processes": [state]}
    assert process_states.select(saved) == state
    with pytest.raises(ValueError, match="distributed.num_processes=2"):
        process_states.select({"process_count": 2, "processes": [state, state]})

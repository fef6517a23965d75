from pathlib import Path

import pytest

from chain_node.checkpoint import Checkpoint, Stage


def test_progress_survives_reopening(tmp_path: Path):
    path = tmp_path / "node.sqlite3"
    cp = Checkpoint(path, scope="31337:0xabc")
    assert cp.last_block(default=41) == 41
    cp.set_last_block(57)
    cp.see(3, block=50)
    cp.see(4, block=51)
    cp.advance(3, Stage.TRANSFERRED, "tx=0x01")
    assert cp.attempt(4) == 1
    cp.close()

    cp = Checkpoint(path, scope="31337:0xabc")
    assert cp.last_block(default=0) == 57
    assert [(r.request_id, r.stage) for r in cp.pending()] == [(3, Stage.TRANSFERRED), (4, Stage.SEEN)]
    assert cp.get(4).attempts == 1
    # seeing a known request again does not reset it
    assert cp.see(3, block=99).stage is Stage.TRANSFERRED
    cp.advance(3, Stage.COMPLETED)
    assert [r.request_id for r in cp.pending()] == [4]
    assert cp.counts() == {"completed": 1, "seen": 1}


def test_scopes_do_not_mix(tmp_path: Path):
    path = tmp_path / "node.sqlite3"
    a = Checkpoint(path, scope="chain-a")
    b = Checkpoint(path, scope="chain-b")
    a.set_last_block(10)
    a.see(1, block=5)
    assert b.last_block(default=0) == 0
    assert b.get(1) is None
    assert b.pending() == []


def test_an_answer_and_its_stage_commit_together_and_finish_drops_the_transfer(tmp_path):
    cp = Checkpoint(tmp_path / "cp.sqlite", "scope")
    cp.see(7, 1)
    cp.store_transfer(7, b"ct", (1, 4), "<f4", b"c" * 32)
    cp.store_reply(7, b"result", b"sig", 3, b"t" * 32, stage=Stage.TRANSFERRED)
    again = Checkpoint(tmp_path / "cp.sqlite", "scope")  # what a restarted node reads
    assert again.get(7).stage is Stage.TRANSFERRED
    assert again.load_reply(7) == (b"result", b"sig", 3, b"t" * 32, None)
    cp.finish(7, Stage.COMPLETED, "")
    assert again.get(7).stage is Stage.COMPLETED
    assert again.load_transfer(7) is None and again.load_reply(7) is None
    with pytest.raises(ValueError, match="final stage"):
        cp.finish(7, Stage.SEEN)

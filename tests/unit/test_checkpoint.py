from pathlib import Path

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

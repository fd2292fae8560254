"""The run directory every long job keeps: its identity, its resume check, its JSON files."""

from __future__ import annotations

import json

import pytest

from lglsearch.errors import LglsearchError
from lglsearch.rundir import RECORD, RunDir, UnreadableFile, read_json


@pytest.mark.parametrize(
    ("damage", "message", "reason"),
    [
        (lambda p: p.write_text('{"a": '), "is unreadable, not JSON (", "not JSON: "),
        (lambda p: p.write_bytes(b"\xff\xfe\x00"), "is unreadable, not JSON (", "not JSON: "),
        (lambda p: p.write_text("[1]"), "is not a record", "not a record"),
        (lambda p: p.mkdir(), "cannot read", "Is a directory"),
    ],
)
def test_an_unreadable_file_is_one_line_naming_it_why_and_the_fix(tmp_path, damage, message, reason):
    path = tmp_path / "state.json"
    damage(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(UnreadableFile) as caught:
        read_json(path, fix="restore it", check=lambda v: None if isinstance(v, dict) else "not a record")
    text = str(caught.value)
    assert str(path) in text and message in text and text.endswith("; restore it") and "\n" not in text
    assert caught.value.reason.startswith(reason) and isinstance(caught.value, LglsearchError)
    assert (path.read_bytes() if path.is_file() else None) == before and path.exists(), "left as it is"


def test_a_resume_names_each_difference_and_older_records_still_resume(tmp_path):
    run = RunDir(tmp_path, what="a search", fix="start again")
    run.write_record({"device": "host", "seed": 0, "gone": 1}, config={"trials": 3})
    assert json.loads((tmp_path / RECORD).read_text()) == {
        "identity": {"device": "host", "seed": 0, "gone": 1},
        "config": {"trials": 3},
    }
    now = {"device": "host", "seed": 2, "steps": 0}
    changes = run.changes(now, added={"steps": 0})  # a key newer than the record, at the value it had
    assert [(c.key, c.then, c.now) for c in changes] == [("seed", 0, 2), ("gone", 1, None)]
    longer = run.changes(now | {"steps": 60}, added={"steps": 0})
    assert [str(c) for c in longer] == ["seed: 0 then, 2 now", "steps: 0 then, 60 now", "gone: 1 then, null now"]

    (tmp_path / RECORD).write_text(json.dumps({"arguments": {}}))
    with pytest.raises(UnreadableFile, match=r"is not a search.s record \(it holds no identity\); start again"):
        run.changes(now)

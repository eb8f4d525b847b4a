import json

import pytest

from pipeline.errors import DataError, SkipPolicy, TooManySkipped
from pipeline.io import atomic_path, write_json


def test_atomic_file_replaced_only_on_success(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old"
    assert list(tmp_path.iterdir()) == [out]  # no temporary left behind
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"


def test_atomic_directory(tmp_path):
    out = tmp_path / "d"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_atomic_requires_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "z"):
        pass


def test_write_json_sorted(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1.5], "b": 1}


def test_skip_policy_counts_and_fails_above_threshold():
    policy = SkipPolicy(on_error="skip", max_skip_fraction=0.2, stage="t")
    policy.handle(DataError("a.jpg", "corrupt", kind="corrupt_image"))
    policy.check(total=10)  # 10% skipped: fine
    policy.handle(DataError("b.jpg", "corrupt", kind="corrupt_image"))
    policy.handle(DataError("c.xml", "bad", kind="malformed_xml"))
    with pytest.raises(TooManySkipped, match="skipped 3 of 10"):
        policy.check(total=10)
    assert policy.metrics() == {
        "skipped": 3,
        "skipped_reasons": {"corrupt_image": 2, "malformed_xml": 1},
    }


def test_skip_policy_fail_mode_raises_first_error():
    policy = SkipPolicy(on_error="fail")
    with pytest.raises(DataError, match=r"a\.jpg: corrupt"):
        policy.handle(DataError("a.jpg", "corrupt"))

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


def test_canonical_makes_equal_payloads_pickle_to_equal_bytes():
    import io
    import pickle

    import torch

    from pipeline.io import canonical

    key = "".join(["l", "r"])  # a fresh string object, as one read back from a file
    a = {"config": {"lr": 0.1}, "history": [{"lr": 0.1}]}
    b = {"config": {"lr": 0.1}, "history": [{key: 0.1}]}
    assert pickle.dumps(a) != pickle.dumps(b)  # same content, different bytes
    assert pickle.dumps(canonical(a)) == pickle.dumps(canonical(b))
    a["t"], b["t"] = torch.ones(2), torch.ones(2)
    buf_a, buf_b = io.BytesIO(), io.BytesIO()
    torch.save(canonical(a), buf_a)
    torch.save(canonical(b), buf_b)
    assert buf_a.getvalue() == buf_b.getvalue()
    assert canonical((1, ["x"])) == (1, ["x"]) and canonical(a)["t"] is a["t"]

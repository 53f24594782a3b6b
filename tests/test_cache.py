"""The prepared-dataset cache: manifest, reuse, rebuild rules, atomic failure."""
import json
from pathlib import Path

import pytest

from cllm4rec.data import BadLines, DataError, Dataset, prepare_dataset
from cllm4rec.data.cache import manifest_table


class PairsSource:
    """A minimal source: 'user item' per line (the interface every reader follows)."""

    def __init__(self, path, name="pairs", fail=False):
        self.path = str(path)
        self.name = name
        self.fail = fail
        self.notes = {}
        self._reads = 0

    def files(self):
        return [Path(self.path)]

    def read(self, bad: BadLines) -> Dataset:
        self._reads += 1
        users, items = [], []
        for n, line in enumerate(Path(self.path).read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) != 2:
                bad(DataError(self.path, "expected 'user item'", line=n, field="line"))
                continue
            users.append(parts[0])
            items.append(parts[1])
        if self.fail:
            raise RuntimeError("simulated crash after reading")
        return Dataset.from_raw(self.name, users, items)


def write_pairs(path, n_users=30, n_items=12, extra=""):
    lines = [f"u{u} i{(u * 7 + k) % n_items}" for u in range(n_users) for k in range(6)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


ARGS = dict(preprocess_args={"dedup": "first", "user_core": 0, "item_core": 0},
            split_args={"protocol": "random", "seed": 0, "ratios": [0.8, 0.1, 0.1]})


def test_build_then_reuse(tmp_path):
    src = PairsSource(write_pairs(tmp_path / "p.txt"))
    ds, man = prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)
    assert not man["cache"]["reused"] and src._reads == 1
    assert man["counts"] == ds.counts() == {"users": 30, "items": 12, "interactions": 180}
    assert man["inputs"][0]["sha256"] and man["inputs"][0]["bytes"] > 0
    assert man["split"]["counts"]["test"] == 30 and "numpy" in man["versions"]
    ds2, man2 = prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)
    assert man2["cache"]["reused"] and src._reads == 1
    assert (ds2.split == ds.split).all() and ds2.item_ids == ds.item_ids
    assert "split counts" in manifest_table(man2)
    # only the finished folder is left in the cache
    assert [p.name for p in (tmp_path / "c").iterdir()] == [Path(man["cache"]["folder"]).name]


@pytest.mark.parametrize("change", ["input", "seed", "protocol", "core"])
def test_changed_input_or_parameter_rebuilds(tmp_path, change):
    path = write_pairs(tmp_path / "p.txt")
    src = PairsSource(path)
    _, first = prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)
    args = json.loads(json.dumps(ARGS))
    if change == "input":
        write_pairs(path, n_users=31)
    elif change == "seed":
        args["split_args"]["seed"] = 1
    elif change == "protocol":
        args["split_args"] = {"protocol": "loo"}
    else:
        args["preprocess_args"]["user_core"] = 2
    _, second = prepare_dataset(src, cache_dir=tmp_path / "c", **args)
    assert not second["cache"]["reused"] and second["key"] != first["key"]


def test_failed_build_leaves_nothing(tmp_path):
    src = PairsSource(write_pairs(tmp_path / "p.txt"), fail=True)
    with pytest.raises(RuntimeError, match="simulated"):
        prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_kcore_that_empties_names_the_file(tmp_path):
    src = PairsSource(write_pairs(tmp_path / "p.txt"))
    with pytest.raises(DataError, match=r"p\.txt.*left no interactions.*lower"):
        prepare_dataset(src, cache_dir=tmp_path / "c", preprocess_args={"user_core": 50, "item_core": 50},
                        split_args=ARGS["split_args"])
    assert not any((tmp_path / "c").glob("*")) if (tmp_path / "c").exists() else True


def test_missing_input_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare_dataset(PairsSource(tmp_path / "nope.txt"), cache_dir=tmp_path / "c", **ARGS)


def test_strict_and_skip_modes(tmp_path):
    path = write_pairs(tmp_path / "p.txt", extra="only-one-field\n")
    with pytest.raises(DataError, match=r"p\.txt, line 181, field 'line'"):
        prepare_dataset(PairsSource(path), cache_dir=tmp_path / "c", **ARGS)
    ds, man = prepare_dataset(PairsSource(path), cache_dir=tmp_path / "c", strict=False, **ARGS)
    assert man["read_report"]["skipped_lines"] == 1 and ds.n_interactions == 180

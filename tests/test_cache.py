"""The prepared-dataset cache: manifest, reuse, rebuild rules, atomic failure."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cllm4rec.data import BadLines, DataError, Dataset, prepare_dataset
from cllm4rec.data.cache import manifest_table
from cllm4rec.data.splits import split_problems


class PairsSource:
    """A minimal source: 'user item' per line (the interface every reader follows)."""

    def __init__(self, path, name="pairs", fail=False, texts=False):
        self.path = str(path)
        self.name = name
        self.fail = fail
        self.texts = texts
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
        item_text = {i: {"title": f"the item {i}"} for i in items} if self.texts else None
        return Dataset.from_raw(self.name, users, items, item_text=item_text)


def write_pairs(path, n_users=30, n_items=12, extra=""):
    lines = [f"u{u} i{(u * 7 + k) % n_items}" for u in range(n_users) for k in range(6)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def entries(cache: Path) -> list[str]:
    """What a cache folder holds besides the lock files of its builds."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


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
    # only the finished folder is left in the cache (beside the build's lock file)
    assert entries(tmp_path / "c") == [Path(man["cache"]["folder"]).name]


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
    assert not (tmp_path / "c").exists() or not entries(tmp_path / "c")


def test_kcore_that_empties_names_the_file(tmp_path):
    src = PairsSource(write_pairs(tmp_path / "p.txt"))
    with pytest.raises(DataError, match=r"p\.txt.*left no interactions.*lower"):
        prepare_dataset(src, cache_dir=tmp_path / "c", preprocess_args={"user_core": 50, "item_core": 50},
                        split_args=ARGS["split_args"])
    assert not (tmp_path / "c").exists() or not entries(tmp_path / "c")


def test_missing_input_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare_dataset(PairsSource(tmp_path / "nope.txt"), cache_dir=tmp_path / "c", **ARGS)


def test_strict_and_skip_modes(tmp_path):
    path = write_pairs(tmp_path / "p.txt", extra="only-one-field\n")
    with pytest.raises(DataError, match=r"p\.txt, line 181, field 'line'"):
        prepare_dataset(PairsSource(path), cache_dir=tmp_path / "c", **ARGS)
    ds, man = prepare_dataset(PairsSource(path), cache_dir=tmp_path / "c", strict=False, **ARGS)
    assert man["read_report"]["skipped_lines"] == 1 and ds.n_interactions == 180


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _cut_at_line_boundary(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:len(lines) * 2 // 3]))     # whole lines: valid JSON lines, rows lost


DAMAGE = {
    "manifest cut": lambda f: _cut(f / "manifest.json", 0.5),
    "id_maps cut": lambda f: _cut(f / "id_maps.json", 0.5),
    "item_text cut mid-line": lambda f: _cut(f / "item_text.jsonl", 0.6),
    "item_text cut at a line boundary": lambda f: _cut_at_line_boundary(f / "item_text.jsonl"),
    "interactions.npz cut in half": lambda f: _cut(f / "interactions.npz", 0.5),
    "interactions.npz removed": lambda f: (f / "interactions.npz").unlink(),
    "a byte flipped": lambda f: (f / "id_maps.json").write_text((f / "id_maps.json").read_text().replace("u1", "u9", 1)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_rebuilt_with_one_log_line(tmp_path, damage, caplog):
    src = PairsSource(write_pairs(tmp_path / "p.txt"), texts=True)
    ds, man = prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)
    folder = Path(man["cache"]["folder"])
    assert set(man["files"]) == {"interactions.npz", "id_maps.json", "item_text.jsonl", "user_text.jsonl",
                                 "interaction_text.jsonl"}
    DAMAGE[damage](folder)
    with caplog.at_level(logging.WARNING, logger="cllm4rec.data.cache"):
        again, man2 = prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)
    assert not man2["cache"]["reused"] and src._reads == 2
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(folder) in line and "rebuilding" in line
    assert again.item_text == ds.item_text and again.item_ids == ds.item_ids and (again.split == ds.split).all()
    third, man3 = prepare_dataset(src, cache_dir=tmp_path / "c", **ARGS)    # whole again: reused
    assert man3["cache"]["reused"] and len(third.item_text["title"]) == ds.n_items
    assert entries(tmp_path / "c") == [folder.name]


def test_concurrent_prepares_build_one_entry(tmp_path, shared_data):
    cmd = [sys.executable, "-m", "cllm4rec.prepare", "data=ml100k", f"cache_dir={tmp_path / 'c'}",
           f"hydra.run.dir={tmp_path}/h${{now:%f}}"]
    procs = [subprocess.Popen([*cmd[:-1], f"hydra.run.dir={tmp_path}/h{i}"], cwd=Path(__file__).parents[1],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    reused = sorted(line.split()[-1] for out, _ in outs for line in out.splitlines() if line.startswith("reused"))
    assert reused == ["False", "True"]          # one built it, the other waited and reused it
    (entry,) = entries(tmp_path / "c")
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir() and p.name != entry]   # no torn temp folder


def test_a_split_without_validation_users_prepares_and_says_so(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("".join(f"u{u} i{u % 7}\n" for u in range(30)))      # one item per user: nothing to hold out
    _, man = prepare_dataset(PairsSource(path), cache_dir=tmp_path / "c", **ARGS)
    assert man["split"]["counts"] == {"train": 30, "valid": 0, "test": 0}
    assert man["split"]["users"] == {"train": 30, "valid": 0, "test": 0}
    problems = split_problems(man["split"])
    assert len(problems) == 2 and "fine-tuning" in problems[0] and "user_core" in problems[0]
    assert "scorable users" in manifest_table(man)
    _, ok = prepare_dataset(PairsSource(write_pairs(tmp_path / "q.txt")), cache_dir=tmp_path / "c", **ARGS)
    assert split_problems(ok["split"]) == [] and ok["split"]["users"]["test"] == 30


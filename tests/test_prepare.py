"""Every data config, composed as users run it, prepares the published counts."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from cllm4rec.data import TEST, TRAIN, VALID
from cllm4rec.prepare import prepared_dataset

ROOT = Path(__file__).resolve().parents[1]

# SOURCES.md: users / items / interactions after dedup=first (Yelp: 304,524 distinct pairs;
# All_Beauty: 4,092 distinct pairs)
EXPECTED = {
    "ml100k": (943, 1682, 100_000),
    "beauty": (22_363, 12_101, 198_502),
    "yelp": (30_431, 20_033, 304_524),
    "scientific": (8_317, 4_344, 58_492),
    "all_beauty": (991, 85, 4_092),
    "ml_latest_small": (610, 9_724, 100_836),
}


def data_cfg(name, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="prepare", overrides=[f"data={name}", *overrides]).data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_counts_and_split(name, shared_data):
    cfg = data_cfg(name, f"data.root={shared_data}") if name != "ml100k" else \
        data_cfg(name, f"data.source.path={shared_data / 'movielens_100k'}")
    ds, manifest = prepared_dataset(cfg)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == EXPECTED[name]
    assert manifest["counts"] == dict(zip(("users", "items", "interactions"), EXPECTED[name]))
    sizes = np.bincount(ds.user, minlength=ds.n_users)
    big = sizes[ds.user] >= 3
    per_user = lambda code: np.bincount(ds.user[ds.split == code], minlength=ds.n_users)  # noqa: E731
    assert (per_user(VALID)[sizes >= 3] >= 1).all() and (per_user(TEST)[sizes >= 2] >= 1).all()
    assert (per_user(TRAIN)[sizes >= 1] >= 1).all() and big.any()


def test_embedded_ml100k_matches_shared_copy(shared_data):
    embedded, m1 = prepared_dataset(data_cfg("ml100k"))
    shared, m2 = prepared_dataset(data_cfg("ml100k", f"data.source.path={shared_data / 'movielens_100k'}"))
    assert [i["sha256"] for i in m1["inputs"]] == [i["sha256"] for i in m2["inputs"]]
    assert (embedded.split == shared.split).all() and embedded.item_ids == shared.item_ids
    assert m2["cache"]["reused"]      # same content, another path: the cache is reused


def test_loo_protocol_on_beauty(shared_data):
    ds, _ = prepared_dataset(data_cfg("beauty", f"data.root={shared_data}", "data.split.protocol=loo"))
    assert int((ds.split == TEST).sum()) == ds.n_users == int((ds.split == VALID).sum())


def test_prepare_cli_prints_manifest(shared_data):
    out = subprocess.run([sys.executable, "-m", "cllm4rec.prepare", "data=scientific", f"data.root={shared_data}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "8,317" in out.stdout and "58,492" in out.stdout and "split counts" in out.stdout


def test_prepare_cli_bad_path_is_clear(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cllm4rec.prepare", "data=beauty", f"data.root={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Beauty.txt" in out.stderr and "not found" in out.stderr

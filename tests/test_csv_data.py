"""data=csv: your own interactions as a delimited file with the columns named in conf, checked
against the RecBole reader over the same real ML-100K rows."""
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from cllm4rec.data import BadLines, DataError
from cllm4rec.data.readers import CSVInteractions, RecBoleAtomic
from cllm4rec.prepare import prepared_dataset
from cllm4rec.train import train

ROOT = Path(__file__).resolve().parents[1]
N = 2000


@pytest.fixture
def files(tmp_path, shared_data):
    """The first N ratings of ML-100K twice: as RecBole files, and as a ';' CSV with other column
    names, ISO dates, an extra column, and an item-text CSV."""
    src = shared_data / "movielens_100k"
    inter = (src / "ml-100k.inter").read_text().splitlines()[: N + 1]
    rec = tmp_path / "recbole"
    rec.mkdir()
    (rec / "ml-100k.inter").write_text("\n".join(inter) + "\n")
    items = (src / "ml-100k.item").read_text().splitlines()
    (rec / "ml-100k.item").write_text("\n".join(items) + "\n")
    rows = ["customer;product;stars;when;channel"]
    for line in inter[1:]:
        u, i, r, t = line.split("\t")
        when = dt.datetime.fromtimestamp(int(float(t)), dt.timezone.utc).isoformat()
        rows.append(f"{u};{i};{r};{when};web")
    (tmp_path / "clicks.csv").write_text("\n".join(rows) + "\n")
    texts = ["product;name;year"] + [";".join(x.split("\t")[:3]) for x in items[1:]]
    (tmp_path / "products.csv").write_text("\n".join(texts) + "\n")
    return tmp_path, rec


def overrides(tmp):
    return ["data=csv", f"data.source.path={tmp / 'clicks.csv'}", "data.source.user=customer",
            "data.source.item=product", "data.source.rating=stars", "data.source.timestamp=when",
            "data.source.delimiter=semicolon", f"data.source.item_text={tmp / 'products.csv'}"]


def test_csv_reads_what_the_recbole_reader_reads(files):
    tmp, rec = files
    ours = CSVInteractions(tmp / "clicks.csv", user="customer", item="product", rating="stars", timestamp="when",
                           delimiter="semicolon", item_text=tmp / "products.csv").read(BadLines())
    ref = RecBoleAtomic(path=str(rec)).read(BadLines())
    assert ours.n_interactions == ref.n_interactions == N
    assert ours.user_ids == ref.user_ids and ours.item_ids == ref.item_ids
    assert (ours.user == ref.user).all() and (ours.item == ref.item).all()
    np.testing.assert_array_equal(ours.rating, ref.rating)
    np.testing.assert_array_equal(ours.timestamp, ref.timestamp)
    assert sorted(ours.item_text) == ["name", "year"] and ours.item_text["name"] == ref.item_text["title"]


def test_data_csv_composes_prepares_and_trains(files, tmp_path):
    tmp, _ = files
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("pretrain", overrides=[*overrides(tmp), "data.split.protocol=loo", "experiment=tiny",
                                             "trainer=cpu", "logger=none", "trainer.fast_dev_run=true",
                                             "model.pretrain.evaluate=false", "trainer.enable_progress_bar=false"])
    ds, manifest = prepared_dataset(cfg.data)
    assert manifest["counts"]["interactions"] == N and manifest["split"]["users"]["test"] > 0
    assert manifest["texts"]["item"] == ["name", "year"]
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    train(cfg)
    assert (tmp_path / "run" / "pretrain" / "embeddings.safetensors").exists()


@pytest.mark.parametrize("edit, line, field, message", [
    (lambda rows: rows[:5] + [rows[5].replace("T", " at ", 1)] + rows[6:], 6, "when", "ISO 8601"),
    (lambda rows: rows[:3] + [";".join(rows[3].split(";")[:2])] + rows[4:], 4, "stars", "5 columns"),
    (lambda rows: [rows[0].replace("product", "sku")] + rows[1:], 1, "product", "no 'product' column"),
])
def test_a_bad_row_or_header_is_located(files, edit, line, field, message):
    tmp, _ = files
    path = tmp / "clicks.csv"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    src = CSVInteractions(path, user="customer", item="product", rating="stars", timestamp="when", delimiter=";")
    with pytest.raises(DataError, match=message) as info:
        src.read(BadLines())
    assert (info.value.file, info.value.line, info.value.field) == (str(path), line, field)


def test_delimiter_must_be_one_character(tmp_path):
    assert CSVInteractions(tmp_path / "x.tsv", delimiter="tab").delimiter == "\t"
    with pytest.raises(DataError, match="delimiter ';;' is not one character"):
        CSVInteractions(tmp_path / "x.csv", delimiter=";;")

"""Raw-file readers on the real files in ../shared/data (statistics from SOURCES.md, checked
against independent parses of the same files), and on exact-format fixtures for the Amazon
releases and metadata files that are not shipped here."""
import csv
import gzip
import json

import numpy as np
import pytest

from cllm4rec.data import BadLines, DataError
from cllm4rec.data.readers import AmazonReviews, LCRecJSON, MovieLensCSV, RecBoleAtomic, S3RecSequences


def raw_pairs(ds):
    """(raw user, raw item) per interaction, canonical order."""
    users, items = np.array(ds.user_ids, object), np.array(ds.item_ids, object)
    return list(zip(users[ds.user], items[ds.item]))


def check_canonical(ds):
    """Grouped by user index; within a user non-decreasing time when there is time."""
    assert np.all(np.diff(ds.user) >= 0)
    if ds.timestamp is not None:
        same_user = np.diff(ds.user) == 0
        assert np.all(np.diff(ds.timestamp)[same_user] >= 0)


# ---------------------------------------------------------------------- RecBole atomic (ML-100K)
@pytest.fixture(scope="module")
def ml100k(shared_data):
    src = RecBoleAtomic(path=str(shared_data / "movielens_100k"))
    return src, src.read(BadLines())


def test_ml100k_counts_and_values(ml100k, shared_data):
    src, ds = ml100k
    assert src.name == "ml-100k" and src.notes == {}
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert sorted(np.unique(ds.rating)) == [1, 2, 3, 4, 5]
    ref = np.loadtxt(shared_data / "movielens_100k" / "ml-100k.inter", skiprows=1, dtype=np.int64)
    got = sorted(zip(map(int, np.array(ds.user_ids)[ds.user]), map(int, np.array(ds.item_ids)[ds.item]),
                     ds.rating.astype(int), ds.timestamp))
    assert got == sorted(map(tuple, ref.tolist()))
    assert ds.timestamp.dtype == np.int64 and ds.rating.dtype == np.float32
    check_canonical(ds)


def test_ml100k_texts(ml100k, shared_data):
    _, ds = ml100k
    assert sorted(ds.item_text) == ["genres", "title", "year"]
    assert sorted(ds.user_text) == ["age", "gender", "occupation", "zip_code"]
    toy = ds.item_ids.index("1")
    assert (ds.item_text["title"][toy], ds.item_text["year"][toy], ds.item_text["genres"][toy]) == \
        ("Toy Story", "1995", "Animation, Children's, Comedy")
    assert all(ds.item_text["title"])
    with open(shared_data / "movielens_100k" / "ml-100k.user", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    for uid, age, gender, occupation, zip_code in rows:
        u = ds.user_ids.index(uid)
        assert [ds.user_text[k][u] for k in ("age", "gender", "occupation", "zip_code")] == \
            [age, gender, occupation, zip_code]


def test_recbole_files_and_dataset_choice(tmp_path, shared_data):
    src = RecBoleAtomic(path=shared_data / "movielens_100k")
    assert [f.name for f in src.files()] == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    # two .inter files: the folder alone is ambiguous, dataset= picks one
    inter = (shared_data / "movielens_100k" / "ml-100k.inter").read_text().splitlines(keepends=True)
    (tmp_path / "a.inter").write_text("".join(inter[:11]))
    (tmp_path / "b.inter").write_text("".join(inter[:21]))
    with pytest.raises(DataError, match="dataset="):
        RecBoleAtomic(path=tmp_path).files()
    src = RecBoleAtomic(path=tmp_path, dataset="b")
    assert src.name == "b" and [f.name for f in src.files()] == ["b.inter"]
    ds = src.read(BadLines())
    assert ds.n_interactions == 20 and ds.item_text == {} and ds.user_text == {}


# ---------------------------------------------------------------------- MovieLens CSV
@pytest.fixture(scope="module")
def ml_small(shared_data):
    src = MovieLensCSV(path=shared_data / "movielens_latest_small")
    return src, src.read(BadLines())


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_ml_latest_small_counts(ml_small, shared_data):
    src, ds = ml_small
    assert src.name == "movielens_latest_small"
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (610, 9724, 100_836)
    assert set(np.unique(ds.rating)) == {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5}
    ratings = read_csv(shared_data / "movielens_latest_small" / "ratings.csv")
    assert float(ds.rating.sum()) == pytest.approx(sum(float(r["rating"]) for r in ratings))
    assert int(ds.timestamp.sum()) == sum(int(r["timestamp"]) for r in ratings)
    check_canonical(ds)


def test_ml_latest_small_titles_and_tags(ml_small, shared_data):
    src, ds = ml_small
    folder = shared_data / "movielens_latest_small"
    movies = {m["movieId"]: m for m in read_csv(folder / "movies.csv")}
    assert len(movies) == 9742
    for j, raw in enumerate(ds.item_ids):
        assert ds.item_text["title"][j] == movies[raw]["title"].strip()  # 'Runaway Brain (1995) ' has a space
    # quotes and commas inside titles
    assert ds.item_text["title"][ds.item_ids.index("7789")] == "11'09\"01 - September 11 (2002)"
    assert ds.item_text["title"][ds.item_ids.index("11")] == "American President, The (1995)"
    assert ds.item_text["genres"][ds.item_ids.index("1")] == "Adventure, Animation, Children, Comedy, Fantasy"
    no_genre = sum(movies[raw]["genres"] == "(no genres listed)" for raw in ds.item_ids)
    assert no_genre > 0 and ds.item_text["genres"].count("") == no_genre
    tags = read_csv(folder / "tags.csv")
    rated = set(raw_pairs(ds))
    assert src.notes == {"tags_without_rating": sum((t["userId"], t["movieId"]) not in rated for t in tags)}
    assert src.notes["tags_without_rating"] == 207
    tagged = {(t["userId"], t["movieId"]) for t in tags} & rated
    assert sum(bool(t) for t in ds.interaction_text["tags"]) == len(tagged)
    row = raw_pairs(ds).index(("2", "60756"))
    assert ds.interaction_text["tags"][row] == "funny; Highly quotable; will ferrell"


# ---------------------------------------------------------------------- Amazon 2018 (real)
def all_beauty_lines(shared_data):
    with gzip.open(shared_data / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_amazon_2018_all_beauty(shared_data):
    path = shared_data / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz"
    src = AmazonReviews(reviews=path)
    ds = src.read(BadLines())
    assert src.name == "All_Beauty_5" and src.notes == {"format": "2014/2018"} and src.files() == [path]
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (991, 85, 5269)
    assert sum(bool(t) for t in ds.interaction_text["review"]) == 5264
    assert ds.matrix().nnz == 4092
    ref = all_beauty_lines(shared_data)
    expect = sorted((r["reviewerID"], r["asin"], r["overall"], r["unixReviewTime"], r.get("reviewText", "").strip(),
                     r.get("summary", "").strip()) for r in ref)
    got = sorted(zip(*zip(*raw_pairs(ds)), ds.rating.tolist(), ds.timestamp.tolist(),
                     ds.interaction_text["review"], ds.interaction_text["summary"]))
    assert got == expect
    check_canonical(ds)


# ---------------------------------------------------------------------- Amazon 2014 / 2023 fixtures
META_2014 = [  # one Python dict literal per line, as written by str(dict) (single quotes)
    {"asin": None, "title": "Girls' Ballet Tutu Zebra Hot Pink", "price": 3.17,
     "imUrl": "http://ecx.images-amazon.com/images/I/51fAmVkTbyL._SY300_.jpg",
     "related": {"also_bought": ["B00JHONN1S"], "also_viewed": ["B002BZX8Z6"]},
     "salesRank": {"Beauty": 211836}, "brand": "Coxlist",
     "categories": [["Beauty", "Skin Care", "Face"], ["Beauty", "Makeup", "Eyes"]],
     "description": "A \"soft\" tutu, one size."},
    {"asin": None, "title": "Lip balm", "salesRank": {"Beauty": 5}, "categories": [["Beauty"]]},
]


def write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def test_amazon_2014_reviews_and_python_literal_meta(tmp_path, shared_data):
    ref = all_beauty_lines(shared_data)[:60]
    reviews = [json.dumps({"reviewerID": r["reviewerID"], "asin": r["asin"], "reviewerName": r.get("reviewerName", ""),
                           "helpful": [0, 0], "reviewText": r.get("reviewText", ""), "overall": r["overall"],
                           "summary": r.get("summary", ""), "unixReviewTime": r["unixReviewTime"],
                           "reviewTime": r["reviewTime"]}) for r in ref]
    asins = list(dict.fromkeys(r["asin"] for r in ref))
    meta = [repr({**META_2014[0], "asin": asins[0]}), repr({**META_2014[1], "asin": asins[-1]}),
            repr({**META_2014[1], "asin": "0000000000"})]
    with pytest.raises(json.JSONDecodeError):
        json.loads(meta[0])  # the published format really is not JSON
    # gzip recognised by content: the review file has no .gz name
    write_gz(tmp_path / "reviews_Beauty_5.json", reviews)
    write_gz(tmp_path / "meta_Beauty.json.gz", meta)
    src = AmazonReviews(reviews=tmp_path / "reviews_Beauty_5.json", meta=str(tmp_path / "meta_Beauty.json.gz"))
    ds = src.read(BadLines())
    assert src.name == "reviews_Beauty_5" and ds.n_interactions == 60 and ds.n_items == len(asins)
    assert src.notes == {"format": "2014/2018", "meta_items_without_reviews": 1,
                         "reviewed_items_without_meta": len(asins) - 2}
    first = ds.item_ids.index(asins[0])
    assert ds.item_text["title"][first] == "Girls' Ballet Tutu Zebra Hot Pink"
    assert ds.item_text["categories"][first] == "Beauty > Skin Care > Face; Beauty > Makeup > Eyes"
    assert ds.item_text["brand"][first] == "Coxlist"
    assert ds.item_text["description"][first] == 'A "soft" tutu, one size.'
    last = ds.item_ids.index(asins[-1])
    assert (ds.item_text["title"][last], ds.item_text["categories"][last], ds.item_text["brand"][last]) == \
        ("Lip balm", "Beauty", "")
    assert sum(bool(t) for t in ds.item_text["title"]) == 2


def test_amazon_2023_reviews_and_meta(tmp_path, shared_data):
    ref = all_beauty_lines(shared_data)[:40]
    lines = []
    for j, r in enumerate(ref):
        line = {"rating": r["overall"], "title": r.get("summary", ""), "text": r.get("reviewText", ""), "images": [],
                "asin": r["asin"] + "V", "parent_asin": r["asin"], "user_id": r["reviewerID"],
                "timestamp": r["unixReviewTime"] * 1000 + 123, "helpful_vote": 0, "verified_purchase": True}
        if j % 7 == 3:  # no parent_asin: the item is the asin
            del line["parent_asin"]
        lines.append(json.dumps(line))
    # a plain file with a .gz name: read by content, not name
    (tmp_path / "All_Beauty.jsonl.gz").write_text("\n".join(lines) + "\n")
    parent = ref[0]["asin"]
    meta = {"main_category": "All Beauty", "title": "Howard LC0008 Leather Conditioner", "average_rating": 4.8,
            "rating_number": 10, "features": [], "description": ["Made in USA.", "8 oz."], "price": None,
            "images": [], "videos": [], "store": "Howard Products", "categories": ["Beauty", "Skin Care"],
            "details": {"UPC": "617390882781"}, "parent_asin": parent, "bought_together": None}
    write_gz(tmp_path / "meta_All_Beauty.jsonl", [json.dumps(meta)])
    src = AmazonReviews(reviews=tmp_path / "All_Beauty.jsonl.gz", meta=tmp_path / "meta_All_Beauty.jsonl")
    ds = src.read(BadLines())
    assert src.notes["format"] == "2023" and ds.n_interactions == 40
    expect_items = {r["asin"] + ("V" if j % 7 == 3 else "") for j, r in enumerate(ref)}
    assert set(ds.item_ids) == expect_items
    assert sorted(ds.timestamp.tolist()) == sorted(r["unixReviewTime"] for r in ref)  # ms -> s
    assert sorted(ds.interaction_text["summary"]) == sorted(r.get("summary", "").strip() for r in ref)
    j = ds.item_ids.index(parent)
    assert [ds.item_text[k][j] for k in ("title", "brand", "categories", "description")] == \
        ["Howard LC0008 Leather Conditioner", "Howard Products", "Beauty > Skin Care", "Made in USA. 8 oz."]


def test_amazon_2018_meta_json(tmp_path, shared_data):
    asin = all_beauty_lines(shared_data)[0]["asin"]
    meta = {"category": ["All Beauty", "Skin Care"], "tech1": "", "description": ["Gentle.", "Unscented."],
            "fit": "", "title": "Face wash", "also_buy": [], "brand": "Acme", "feature": [], "rank": "1 in Beauty",
            "main_cat": "All Beauty", "price": "", "asin": asin, "imageURL": []}
    (tmp_path / "meta_All_Beauty.json").write_text(json.dumps(meta) + "\n")
    src = AmazonReviews(reviews=shared_data / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz",
                        meta=tmp_path / "meta_All_Beauty.json")
    ds = src.read(BadLines())
    j = ds.item_ids.index(asin)
    assert [ds.item_text[k][j] for k in ("title", "brand", "categories", "description")] == \
        ["Face wash", "Acme", "All Beauty > Skin Care", "Gentle. Unscented."]
    assert src.notes["reviewed_items_without_meta"] == 84


# ---------------------------------------------------------------------- S3-Rec sequences
def s3rec_paths(d, name):
    low = name.lower()
    return dict(path=d / "amazon_s3rec_splits" / f"{name}.txt",
                attributes=d / "amazon_s3rec_splits" / f"{name}_item2attributes.json",
                datamaps=d / "amazon_p5_datamaps" / f"{low}_datamaps.json")


@pytest.fixture(scope="module")
def beauty(shared_data):
    src = S3RecSequences(**s3rec_paths(shared_data, "Beauty"))
    return src, src.read(BadLines())


@pytest.fixture(scope="module")
def yelp(shared_data):
    src = S3RecSequences(**s3rec_paths(shared_data, "Yelp"),
                         item_text=shared_data / "yelp_item_text" / "Yelp.item.json")
    return src, src.read(BadLines())


def sequence_lines(path):
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def test_beauty_counts_and_order(beauty, shared_data):
    src, ds = beauty
    paths = s3rec_paths(shared_data, "Beauty")
    assert src.name == "Beauty" and src.files() == list(paths.values())
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (22_363, 12_101, 198_502)
    assert ds.rating is None and ds.timestamp is None
    lengths = np.diff(ds.indptr)
    assert (lengths.min(), lengths.max(), round(lengths.mean(), 2)) == (5, 204, 8.88)
    maps = json.loads(paths["datamaps"].read_text())
    assert set(ds.user_ids) == set(maps["user2id"]) and set(ds.item_ids) == set(maps["item2id"])
    for line in sequence_lines(paths["path"])[:50]:  # each user's history is its line, in order
        u = ds.user_ids.index(maps["id2user"][line[0]])
        assert [ds.item_ids[i] for i in ds.histories()[u]] == [maps["id2item"][x] for x in line[1:]]


def test_beauty_attributes(beauty, shared_data):
    """S3-Rec's attribute ids are not P5's: the names must form category paths."""
    src, ds = beauty
    raw = json.loads(s3rec_paths(shared_data, "Beauty")["attributes"].read_text())
    assert round(np.mean([len(v) for v in raw.values()]), 2) == 3.72
    assert len({a for v in raw.values() for a in v}) == 637
    assert src.notes == {"attribute_core": 5}
    text = ds.item_text["attributes"]
    assert all(text)
    # a leaf category implies its parent (false for 100% of items under P5's ids as is)
    for leaf, parent in [("Nail Polish", "Nails"), ("Conditioners", "Hair Care"), ("Shampoos", "Hair Care"),
                         ("Eau de Parfum", "Fragrance")]:
        with_leaf = [t for t in text if f", {leaf}" in f", {t}"]
        assert len(with_leaf) > 100
        assert all(f", {parent}," in f", {t}," for t in with_leaf)


def test_beauty_without_datamaps(shared_data):
    p = s3rec_paths(shared_data, "Beauty")
    ds = S3RecSequences(path=str(p["path"]), attributes=str(p["attributes"])).read(BadLines())
    assert ds.n_interactions == 198_502 and ds.user_ids[0] == "1" and ds.item_ids[:3] == ["1", "2", "3"]
    raw = json.loads(p["attributes"].read_text())
    assert ds.item_text["attributes"][0] == ", ".join(map(str, raw["1"]))


def test_yelp(yelp, shared_data):
    src, ds = yelp
    assert src.notes == {}
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (30_431, 20_033, 316_354)
    assert ds.matrix().nnz == 304_524  # repeats kept
    paths = s3rec_paths(shared_data, "Yelp")
    maps = json.loads(paths["datamaps"].read_text())
    assert set(ds.user_ids) == set(maps["user2id"]) and set(ds.item_ids) == set(maps["item2id"])
    texts = json.loads((shared_data / "yelp_item_text" / "Yelp.item.json").read_text())
    attrs = json.loads(paths["attributes"].read_text())
    for k, entry in texts.items():  # key k is item k+1
        raw = maps["id2item"][str(int(k) + 1)]
        j = ds.item_ids.index(raw) if int(k) < 300 else None
        names = [maps["id2attribute"][str(a)] for a in attrs[str(int(k) + 1)]]
        # independent check of both offsets: the attributes are exactly LETTER's categories
        assert set(names) <= {c.strip() for c in entry["description"].split(",")}
        if j is not None:
            assert ds.item_text["title"][j] == entry["title"]
            assert ds.item_text["description"][j] == entry["description"]
            assert ds.item_text["attributes"][j] == ", ".join(names)


# ---------------------------------------------------------------------- LC-Rec JSON
def test_scientific(shared_data):
    folder = shared_data / "amazon2018_scientific_lcrec"
    src = LCRecJSON(inter=folder / "Scientific.inter.json", items=folder / "Scientific.item.json")
    ds = src.read(BadLines())
    assert src.name == "Scientific" and src.notes == {} and len(src.files()) == 2
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (8317, 4344, 58_492)
    assert sum(map(bool, ds.item_text["title"])) == 4344
    assert sum(map(bool, ds.item_text["description"])) == 4221
    assert sorted(ds.item_text) == ["brand", "categories", "description", "title"]
    inter = json.loads((folder / "Scientific.inter.json").read_text())
    hist = ds.histories()
    for u in ("0", "1", "4000", "8316"):
        assert [ds.item_ids[i] for i in hist[ds.user_ids.index(u)]] == [str(i) for i in inter[u]]
    items = json.loads((folder / "Scientific.item.json").read_text())
    j = ds.item_ids.index("0")
    assert ds.item_text["brand"][j] == items["0"]["brand"] == "Sealed Unit Parts Co., Inc."


# ---------------------------------------------------------------------- shared behaviour
@pytest.mark.parametrize("make", [
    lambda d: RecBoleAtomic(path=d / "movielens_100k"),
    lambda d: MovieLensCSV(path=d / "movielens_latest_small"),
    lambda d: AmazonReviews(reviews=d / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz"),
    lambda d: S3RecSequences(**s3rec_paths(d, "Beauty")),
    lambda d: LCRecJSON(inter=d / "amazon2018_scientific_lcrec" / "Scientific.inter.json"),
], ids=["recbole", "movielens", "amazon", "s3rec", "lcrec"])
def test_interface(make, shared_data):
    """files() exist, read() is deterministic, notes is a dict, name= overrides, options are plain."""
    src = make(shared_data)
    assert all(f.is_file() for f in src.files())
    a, b = src.read(BadLines()), src.read(BadLines())
    assert a.user_ids == b.user_ids and a.item_ids == b.item_ids and np.array_equal(a.item, b.item)
    assert isinstance(src.notes, dict) and a.name == src.name
    options = {k: v for k, v in vars(src).items() if not k.startswith("_")}
    assert all(v is None or isinstance(v, (str, dict)) for v in options.values())
    renamed = type(src)(**{k: v for k, v in options.items() if k not in ("name", "notes")}, name="other")
    assert renamed.name == "other"

"""Bad input, reader by reader: broken copies of real files (built in tmp_path) must give a
DataError naming the file, the 1-based line and the field, with what to do; with
BadLines(strict=False) bad lines are skipped and counted, while an empty or missing file, a
broken whole-file JSON document, or a file that leaves no interactions still raises."""
import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from cllm4rec.data import BadLines, DataError
from cllm4rec.data.readers import AmazonReviews, LCRecJSON, MovieLensCSV, RecBoleAtomic, S3RecSequences


@dataclass
class Case:
    source: object
    file: Path           # the file the error must name
    line: int | None     # ... its 1-based line
    field: str | None    # ... and field
    kept: int | None     # interactions left with strict=False; None: raises even then


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def data_lines(path: Path, n: int) -> list[bytes]:
    """The first n lines (with line ends) of a real file, decompressed if it is gzip."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.splitlines(keepends=True)[:n]


def put(path: Path, lines, gz=False) -> Path:
    raw = b"".join(lines)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def tsv(line: bytes, j: int, value: bytes) -> bytes:
    fields = line.rstrip(b"\n").split(b"\t")
    fields[j] = value
    return b"\t".join(fields) + b"\n"


# ---------------------------------------------------------------------- RecBole atomic
def recbole(tmp, d, edit=None, user_edit=None):
    """ml-100k copy: header + 50 ratings, full .item, .user (optionally edited)."""
    src, folder = d / "movielens_100k", tmp / "ml"
    folder.mkdir()
    inter = data_lines(src / "ml-100k.inter", 51)
    put(folder / "ml-100k.inter", edit(inter) if edit else inter)
    put(folder / "ml-100k.item", data_lines(src / "ml-100k.item", 10_000))
    users = data_lines(src / "ml-100k.user", 10_000)
    put(folder / "ml-100k.user", user_edit(users) if user_edit else users)
    return RecBoleAtomic(path=str(folder)), folder / "ml-100k.inter"


def edit_line(j, fn):
    def edit(lines):
        lines = list(lines)
        lines[j - 1] = fn(lines[j - 1])
        return lines
    return edit


@case
def recbole_rating_word(tmp, d):
    src, f = recbole(tmp, d, edit_line(6, lambda s: tsv(s, 2, b"five")))
    return Case(src, f, 6, "rating", 49)


@case
def recbole_timestamp_word(tmp, d):
    src, f = recbole(tmp, d, edit_line(9, lambda s: tsv(s, 3, b"yesterday")))
    return Case(src, f, 9, "timestamp", 49)


@case
def recbole_missing_value(tmp, d):
    src, f = recbole(tmp, d, edit_line(10, lambda s: b"\t".join(s.split(b"\t")[:3]) + b"\n"))
    return Case(src, f, 10, "timestamp", 49)


@case
def recbole_not_utf8(tmp, d):
    src, f = recbole(tmp, d, edit_line(8, lambda s: tsv(s, 0, b"\xff\xfe")))
    return Case(src, f, 8, None, 49)


@case
def recbole_user_file_not_utf8(tmp, d):
    src, f = recbole(tmp, d, user_edit=edit_line(4, lambda s: tsv(s, 3, "\u00e9crivain".encode("latin-1"))))
    return Case(src, f.with_suffix(".user"), 4, None, 50)


@case
def recbole_header_without_item(tmp, d):
    src, f = recbole(tmp, d, edit_line(1, lambda s: s.replace(b"item_id:token", b"movie:token")))
    return Case(src, f, 1, "item_id", None)


@case
def recbole_every_rating_bad(tmp, d):
    src, f = recbole(tmp, d, lambda lines: lines[:1] + [tsv(s, 2, b"x") for s in lines[1:]])
    return Case(src, f, 2, "rating", None)


@case
def recbole_empty(tmp, d):
    src, f = recbole(tmp, d, lambda lines: [])
    return Case(src, f, None, None, None)


@case
def recbole_missing_folder(tmp, d):
    return Case(RecBoleAtomic(path=str(tmp / "nowhere")), tmp / "nowhere", None, None, None)


# ---------------------------------------------------------------------- MovieLens CSV
def movielens(tmp, d, ratings=None, movies=None, tags=None):
    """ml-latest-small copy: header + 60 ratings, all movies, 40 tags (each optionally edited;
    an edit returning None leaves the file out)."""
    src, folder = d / "movielens_latest_small", tmp / "mls"
    folder.mkdir()
    for name, n, edit in (("ratings.csv", 61, ratings), ("movies.csv", 100_000, movies), ("tags.csv", 41, tags)):
        lines = data_lines(src / name, n)
        lines = edit(lines) if edit else lines
        if lines is not None:
            put(folder / name, lines)
    return MovieLensCSV(path=str(folder)), folder


@case
def movielens_rating_word(tmp, d):
    src, folder = movielens(tmp, d, ratings=edit_line(7, lambda s: b"1,50,four,964982931\n"))
    return Case(src, folder / "ratings.csv", 7, "rating", 59)


@case
def movielens_too_few_values(tmp, d):
    src, folder = movielens(tmp, d, ratings=edit_line(12, lambda s: b",".join(s.split(b",")[:3]) + b"\n"))
    return Case(src, folder / "ratings.csv", 12, "timestamp", 59)


@case
def movielens_title_not_utf8(tmp, d):
    latin1 = "Toy St\u00f3ry".encode("latin-1")
    src, folder = movielens(tmp, d, movies=edit_line(2, lambda s: s.replace(b"Toy Story", latin1)))
    return Case(src, folder / "movies.csv", 2, None, 60)


@case
def movielens_tag_without_user(tmp, d):
    src, folder = movielens(tmp, d, tags=edit_line(3, lambda s: b"," + s.split(b",", 1)[1]))
    return Case(src, folder / "tags.csv", 3, "userId", 60)


@case
def movielens_missing_movies(tmp, d):
    src, folder = movielens(tmp, d, movies=lambda lines: None)
    return Case(src, folder / "movies.csv", None, None, None)


@case
def movielens_empty_tags(tmp, d):
    src, folder = movielens(tmp, d, tags=lambda lines: [])
    return Case(src, folder / "tags.csv", None, None, None)


# ---------------------------------------------------------------------- Amazon reviews
def beauty_reviews(d, n=40):
    return data_lines(d / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz", n)


def amazon(tmp, d, edit=None, gz=True, meta=None):
    lines = beauty_reviews(d)
    f = put(tmp / "All_Beauty_5.json.gz", edit(lines) if edit else lines, gz=gz)
    return AmazonReviews(reviews=str(f), meta=None if meta is None else str(meta)), f


def json_edit(j, fn):
    """Edit line j (1-based) as a dict."""
    def change(s):
        obj = json.loads(s)
        fn(obj)
        return json.dumps(obj).encode() + b"\n"
    return edit_line(j, change)


@case
def amazon_malformed_json(tmp, d):
    src, f = amazon(tmp, d, edit_line(3, lambda s: s.rstrip().rstrip(b"}") + b"\n"))
    return Case(src, f, 3, None, 39)


@case
def amazon_overall_word(tmp, d):
    src, f = amazon(tmp, d, json_edit(4, lambda o: o.update(overall="five")))
    return Case(src, f, 4, "overall", 39)


@case
def amazon_missing_asin(tmp, d):
    src, f = amazon(tmp, d, json_edit(5, lambda o: o.pop("asin")))
    return Case(src, f, 5, "asin", 39)


@case
def amazon_reviewer_list(tmp, d):
    src, f = amazon(tmp, d, json_edit(6, lambda o: o.update(reviewerID=["A3CIUOJXQ5VDQ2"])))
    return Case(src, f, 6, "reviewerID", 39)


@case
def amazon_review_text_object(tmp, d):
    src, f = amazon(tmp, d, json_edit(9, lambda o: o.update(reviewText={"text": "nice"})))
    return Case(src, f, 9, "reviewText", 39)


@case
def amazon_line_not_object(tmp, d):
    src, f = amazon(tmp, d, edit_line(8, lambda s: b"[1, 2]\n"))
    return Case(src, f, 8, None, 39)


@case
def amazon_not_utf8(tmp, d):
    src, f = amazon(tmp, d, edit_line(7, lambda s: s.replace(b'"summary": "', b'"summary": "\xff\xfe')))
    return Case(src, f, 7, None, 39)


@case
def amazon_truncated_gzip(tmp, d):
    whole = gzip.compress(b"".join(beauty_reviews(d, 400)))
    cut = whole[: len(whole) * 3 // 5]
    f = tmp / "All_Beauty_5.json.gz"
    f.write_bytes(cut)
    complete = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")  # independent count
    assert 100 < complete < 400
    return Case(AmazonReviews(reviews=str(f)), f, complete + 1, None, complete)


@case
def amazon_gzip_garbage(tmp, d):
    f = tmp / "reviews.json"
    f.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    return Case(AmazonReviews(reviews=str(f)), f, 1, None, None)


@case
def amazon_empty(tmp, d):
    src, f = amazon(tmp, d, lambda lines: [], gz=False)
    return Case(src, f, None, None, None)


@case
def amazon_empty_gzip(tmp, d):
    src, f = amazon(tmp, d, lambda lines: [])
    return Case(src, f, None, None, None)


@case
def amazon_missing(tmp, d):
    return Case(AmazonReviews(reviews=str(tmp / "reviews.json.gz")), tmp / "reviews.json.gz", None, None, None)


@case
def amazon_2023_timestamp_word(tmp, d):
    def to_2023(lines):
        out = []
        for s in lines:
            r = json.loads(s)
            out.append(json.dumps({"rating": r["overall"], "title": r.get("summary"), "text": r.get("reviewText"),
                                   "asin": r["asin"], "parent_asin": r["asin"], "user_id": r["reviewerID"],
                                   "timestamp": r["unixReviewTime"] * 1000}).encode() + b"\n")
        return json_edit(11, lambda o: o.update(timestamp="yesterday"))(out)
    src, f = amazon(tmp, d, to_2023, gz=False)
    return Case(src, f, 11, "timestamp", 39)


@case
def amazon_meta_literal_cut(tmp, d):
    asins = [json.loads(s)["asin"] for s in beauty_reviews(d)]
    meta = [repr({"asin": a, "title": f"Item {a}", "categories": [["Beauty", "Hair"]]}).encode() + b"\n" for a in asins]
    meta[1] = meta[1][:30] + b"\n"
    f = put(tmp / "meta_Beauty.json.gz", meta, gz=True)
    src, _ = amazon(tmp, d, meta=f)
    return Case(src, f, 2, None, 40)


# ---------------------------------------------------------------------- S3-Rec sequences
def s3rec(tmp, d, edit=None, attributes=None, datamaps=None, name="Beauty", item_text=None):
    folder = d / "amazon_s3rec_splits"
    lines = data_lines(folder / f"{name}.txt", 40)
    f = put(tmp / f"{name}.txt", edit(lines) if edit else lines)
    src = S3RecSequences(path=str(f), attributes=str(attributes or folder / f"{name}_item2attributes.json"),
                         datamaps=str(datamaps or d / "amazon_p5_datamaps" / f"{name.lower()}_datamaps.json"),
                         item_text=None if item_text is None else str(item_text))
    total = sum(len(s.split()) - 1 for s in lines)
    return src, f, total, lines


@case
def s3rec_item_word(tmp, d):
    src, f, total, lines = s3rec(tmp, d, edit_line(3, lambda s: s.rstrip() + b" 12x\n"))
    return Case(src, f, 3, "item", total - (len(lines[2].split()) - 1))


@case
def s3rec_unknown_item(tmp, d):
    src, f, total, lines = s3rec(tmp, d, edit_line(5, lambda s: s.rstrip() + b" 999999\n"))
    return Case(src, f, 5, "item", total - (len(lines[4].split()) - 1))


@case
def s3rec_unknown_user(tmp, d):
    src, f, total, lines = s3rec(tmp, d, edit_line(6, lambda s: b"999999 " + s.split(b" ", 1)[1]))
    return Case(src, f, 6, "user", total - (len(lines[5].split()) - 1))


@case
def s3rec_not_utf8(tmp, d):
    src, f, total, lines = s3rec(tmp, d, edit_line(7, lambda s: s.replace(b" ", b" \xe9", 1)))
    return Case(src, f, 7, None, total - (len(lines[6].split()) - 1))


@case
def s3rec_attributes_not_list(tmp, d):
    text = (d / "amazon_s3rec_splits" / "Beauty_item2attributes.json").read_text()
    assert '"4": [1, 2, 3]' in text
    f = tmp / "Beauty_item2attributes.json"
    f.write_text(text.replace('"4": [1, 2, 3]', '"4": "Makeup"'))
    src, _, total, _ = s3rec(tmp, d, attributes=f)
    return Case(src, f, 1, "/4", total)


@case
def s3rec_attributes_malformed(tmp, d):
    text = (d / "amazon_s3rec_splits" / "Beauty_item2attributes.json").read_text()
    f = tmp / "Beauty_item2attributes.json"
    f.write_text(text[: len(text) // 2])
    src, *_ = s3rec(tmp, d, attributes=f)
    return Case(src, f, 1, None, None)


@case
def s3rec_datamaps_without_id2item(tmp, d):
    maps = json.loads((d / "amazon_p5_datamaps" / "beauty_datamaps.json").read_text())
    del maps["id2item"]
    f = tmp / "beauty_datamaps.json"
    f.write_text(json.dumps(maps))
    src, *_ = s3rec(tmp, d, datamaps=f)
    return Case(src, f, 1, "id2item", None)


@case
def s3rec_missing_datamaps(tmp, d):
    src, *_ = s3rec(tmp, d, datamaps=tmp / "datamaps.json")
    return Case(src, tmp / "datamaps.json", None, None, None)


@case
def s3rec_empty(tmp, d):
    src, f, *_ = s3rec(tmp, d, lambda lines: [])
    return Case(src, f, None, None, None)


@case
def s3rec_item_text_title_not_text(tmp, d):
    texts = json.loads((d / "yelp_item_text" / "Yelp.item.json").read_text())
    texts["5"]["title"] = [{"name": "The Great Greek"}]
    doc = json.dumps(texts, indent=2)
    f = tmp / "Yelp.item.json"
    f.write_text(doc)
    rows = doc.splitlines()
    line = next(j for j in range(rows.index('  "5": {'), len(rows)) if '"title"' in rows[j]) + 1  # 1-based
    src, _, total, _ = s3rec(tmp, d, name="Yelp", item_text=f)
    return Case(src, f, line, "/5/title", total)


# ---------------------------------------------------------------------- LC-Rec JSON
def lcrec(tmp, d, edit=None, items=None):
    folder = d / "amazon2018_scientific_lcrec"
    full = json.loads((folder / "Scientific.inter.json").read_text())
    inter = {u: full[u] for u in list(full)[:40]}
    total = sum(map(len, inter.values()))
    f = tmp / "Scientific.inter.json"
    f.write_text(edit(inter) if edit else json.dumps(inter))
    return LCRecJSON(inter=str(f), items=str(items or folder / "Scientific.item.json")), f, total, inter


@case
def lcrec_list_not_list(tmp, d):
    src, f, total, inter = lcrec(tmp, d, lambda i: json.dumps({**i, "3": "17"}))
    return Case(src, f, 1, "/3", total - len(inter["3"]))


@case
def lcrec_index_word(tmp, d):
    src, f, total, inter = lcrec(tmp, d, lambda i: json.dumps({**i, "4": [1, "abc"]}))
    return Case(src, f, 1, "/4", total - len(inter["4"]))


@case
def lcrec_malformed(tmp, d):
    src, f, *_ = lcrec(tmp, d, lambda i: json.dumps(i)[:-1])
    return Case(src, f, 1, None, None)


@case
def lcrec_not_object(tmp, d):
    src, f, *_ = lcrec(tmp, d, lambda i: json.dumps(list(i.values())))
    return Case(src, f, 1, None, None)


@case
def lcrec_empty(tmp, d):
    src, f, *_ = lcrec(tmp, d, lambda i: "")
    return Case(src, f, None, None, None)


@case
def lcrec_items_not_utf8(tmp, d):
    lines = data_lines(d / "amazon2018_scientific_lcrec" / "Scientific.item.json", 10**6)
    lines[99] = lines[99].replace(b'": "', b'": "\xff', 1)
    f = put(tmp / "Scientific.item.json", lines)
    src, *_ = lcrec(tmp, d, items=f)
    return Case(src, f, 100, None, None)


@case
def lcrec_item_not_object(tmp, d):
    items = json.loads((d / "amazon2018_scientific_lcrec" / "Scientific.item.json").read_text())
    items["7"] = "a string"
    doc = json.dumps(items, indent=2)
    f = tmp / "Scientific.item.json"
    f.write_text(doc)
    src, _, total, _ = lcrec(tmp, d, items=f)
    return Case(src, f, doc.splitlines().index('  "7": "a string",') + 1, "/7", total)


# ---------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", CASES)
def test_strict_error_names_file_line_field(name, tmp_path, shared_data):
    c = CASES[name](tmp_path, shared_data)
    with pytest.raises(DataError) as info:
        c.source.read(BadLines())
    e = info.value
    assert (Path(e.file), e.line, e.field) == (c.file, c.line, c.field), str(e)
    assert e.hint and str(e).startswith(str(c.file)) and e.hint in str(e)
    if c.line is not None:
        assert f"line {c.line}" in str(e)


@pytest.mark.parametrize("name", CASES)
def test_lenient_skips_and_counts(name, tmp_path, shared_data):
    c = CASES[name](tmp_path, shared_data)
    bad = BadLines(strict=False)
    if c.kept is None:
        with pytest.raises(DataError):
            c.source.read(bad)
        return
    ds = c.source.read(bad)
    assert ds.n_interactions == c.kept
    report = bad.report()
    assert report["skipped_lines"] == 1 and len(report["examples"]) == 1
    assert str(c.file) in report["examples"][0]


def test_strict_is_the_default():
    bad = BadLines()
    assert bad.strict is True
    with pytest.raises(DataError):
        bad(DataError("x.json", "broken", line=1))


def test_lenient_counts_every_bad_line(tmp_path, shared_data):
    """Many bad lines: all counted, a few kept as examples, the rest read."""
    lines = beauty_reviews(shared_data)
    broken = [s if j % 4 else s[:20] + b"\n" for j, s in enumerate(lines)]
    f = put(tmp_path / "r.json", broken)
    bad = BadLines(strict=False)
    ds = AmazonReviews(reviews=f).read(bad)
    assert bad.count == 10 and ds.n_interactions == 30 and len(bad.report()["examples"]) == 5


def test_cases_cover_every_reader():
    assert {n.split("_")[0] for n in CASES} == {"recbole", "movielens", "amazon", "s3rec", "lcrec"}

"""Raw public data files -> one `Dataset`.

Each reader ("source") is built from paths and offers
    name: str                               the default dataset name
    files() -> list[Path]                   every input file it will read (hashed by the cache)
    read(bad: BadLines) -> Dataset          built with Dataset.from_raw
    notes: dict                             after read(): counts worth a line in the manifest

Sources, by family:
    RecBoleAtomic(path, dataset=None, name=None)              RecBole .inter/.item/.user (ML-100K)
    MovieLensCSV(path, name=None)                             GroupLens ratings/movies/tags CSVs
    AmazonReviews(reviews, meta=None, name=None)              Amazon 2014 / 2018 / 2023 JSON lines
    S3RecSequences(path, attributes=None, datamaps=None,      S3-Rec Beauty.txt / Yelp.txt with P5
                   item_text=None, name=None)                 datamaps and LETTER item texts
    LCRecJSON(inter, items=None, name=None)                   LC-Rec Scientific.inter/.item.json
    CSVInteractions(path, user, item, rating=None,            any delimited file, columns named
                    timestamp=None, delimiter=",",            in conf (data=csv), with an
                    item_text=None, ...)                      optional item-text file

Bad input raises `DataError` (file, 1-based line, field, what to do). With
`BadLines(strict=False)` bad lines (or entries of a JSON document) are skipped and counted; a
file that is empty, missing, not a valid JSON document, or leaves no interactions always raises.
"""
from .readers_amazon import AmazonReviews
from .readers_movielens import CSVInteractions, MovieLensCSV, RecBoleAtomic
from .readers_sequences import LCRecJSON, S3RecSequences

__all__ = ["RecBoleAtomic", "MovieLensCSV", "CSVInteractions", "AmazonReviews", "S3RecSequences", "LCRecJSON"]

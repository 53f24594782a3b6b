"""Raw files -> one Dataset -> preprocessing -> split -> cached on disk with a manifest."""
from .cache import manifest_table, prepare_dataset
from .dataset import TEST, TRAIN, VALID, Dataset
from .errors import BadLines, DataError
from .preprocess import deduplicate, kcore, keep_ratings_above, preprocess
from .splits import split_dataset, split_leave_one_out, split_random

__all__ = ["Dataset", "TRAIN", "VALID", "TEST", "DataError", "BadLines", "prepare_dataset", "manifest_table",
           "preprocess", "deduplicate", "kcore", "keep_ratings_above", "split_dataset", "split_random",
           "split_leave_one_out"]

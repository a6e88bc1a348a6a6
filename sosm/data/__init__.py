"""Text data: the embedded default corpus, Tiny Shakespeare, strict UTF-8 files, batches."""
from .batches import Batch, BatchSampler, TokenSplits, get_batch, split_ids
from .corpus import (DATA_DIR_ENV, DataUnavailableError, TINYSHAKESPEARE_SHA256, TINYSHAKESPEARE_SIZE, decode_text, default_corpus,
                     load_tinyshakespeare, read_text_file, verify_file)

__all__ = ["Batch", "BatchSampler", "TokenSplits", "get_batch", "split_ids", "DATA_DIR_ENV", "DataUnavailableError",
           "TINYSHAKESPEARE_SHA256", "TINYSHAKESPEARE_SIZE", "decode_text", "default_corpus",
           "load_tinyshakespeare", "read_text_file", "verify_file"]

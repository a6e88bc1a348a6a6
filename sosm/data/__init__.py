"""Text data (the embedded default corpus, Tiny Shakespeare, strict UTF-8 files, batches) and synthetic recall tasks."""
from .batches import Batch, BatchSampler, TokenSplits, get_batch, split_ids
from .corpus import (DATA_DIR_ENV, DataUnavailableError, TINYSHAKESPEARE_SHA256, TINYSHAKESPEARE_SIZE, decode_text, default_corpus,
                     load_tinyshakespeare, read_text_file, verify_file)
from .recall import (IGNORE_INDEX, RecallData, RecallSplits, RecallTaskConfig, answer_sources, format_example,
                     induction_head, make_recall_splits, mqar, selective_copying)

__all__ = ["Batch", "BatchSampler", "TokenSplits", "get_batch", "split_ids", "DATA_DIR_ENV", "DataUnavailableError",
           "TINYSHAKESPEARE_SHA256", "TINYSHAKESPEARE_SIZE", "decode_text", "default_corpus",
           "load_tinyshakespeare", "read_text_file", "verify_file",
           "IGNORE_INDEX", "RecallData", "RecallSplits", "RecallTaskConfig", "answer_sources", "format_example",
           "induction_head", "make_recall_splits", "mqar", "selective_copying"]

"""``ServeLimits``: the bounds ``sosm serve`` enforces, each answered with a status that names it.

=================== ======= =============================================================
limit               status  when
=================== ======= =============================================================
``max_body_bytes``  413     the request body is larger (checked before it is parsed)
malformed JSON      400     the body is not JSON
schema              422     a field is missing, of the wrong type, out of range, or unknown
``max_prompt_tokens`` 400   ``/v1/completions``: the prompt encodes to more tokens
``max_tokens``      400     ``/v1/completions``: ``max_tokens`` asks for more
``max_text_tokens`` 400     ``/v1/graph``: the text encodes to more tokens (``/v1/inspect``: the model's context)
``queue_size``      429     that many requests already wait for the model (with ``Retry-After``)
=================== ======= =============================================================

Every error body is OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..common.configs import is_int


@dataclass(frozen=True)
class ServeLimits:
    """Bounds of one server (``sosm serve`` flags of the same names).

    Args:
        queue_size: requests that may wait for the model beyond the one it is running (>= 1);
            one more is answered 429.
        max_body_bytes: largest request body in bytes.
        max_prompt_tokens: longest prompt in tokens (None: the model's context, ``max_seq_len``,
            which is also the upper bound: the decoder cannot take more).
        max_tokens: most tokens one completion may ask for.
        max_text_tokens: longest ``/v1/graph`` text in tokens.
        drain_seconds: after SIGTERM, how long in-flight requests may take to finish.
    """

    queue_size: int = 32  # waiting requests beyond the running one; one more gets 429
    max_body_bytes: int = 65536  # 64 KiB of JSON
    max_prompt_tokens: int | None = None  # None: the model's max_seq_len
    max_tokens: int = 256  # new tokens per completion
    max_text_tokens: int = 4096  # /v1/graph text
    drain_seconds: float = 30.0  # SIGTERM: time given to in-flight requests

    def __post_init__(self):
        for name in ("queue_size", "max_body_bytes", "max_tokens", "max_text_tokens"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; accepted: an int >= 1")
        if self.max_prompt_tokens is not None and (not is_int(self.max_prompt_tokens) or self.max_prompt_tokens < 1):
            raise ValueError(f"max_prompt_tokens={self.max_prompt_tokens!r} is invalid; accepted: None or an int >= 1")
        if not self.drain_seconds > 0:
            raise ValueError(f"drain_seconds={self.drain_seconds!r} is invalid; accepted: a float > 0")

    def prompt_limit(self, max_seq_len: int) -> int:
        """The effective prompt bound for a model with context ``max_seq_len``."""
        return max_seq_len if self.max_prompt_tokens is None else min(self.max_prompt_tokens, max_seq_len)

    def to_dict(self) -> dict:
        return asdict(self)

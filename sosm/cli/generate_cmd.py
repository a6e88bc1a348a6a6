"""``sosm generate``: sample a continuation of a prompt from a trained checkpoint, printed as it is sampled.

A mask-predict checkpoint (a bidirectional model) is decoded by Mask-Predict iterative refinement
(:func:`sosm.model.mask_predict.mask_predict_decode`, ``--iterations``): the prompt followed by
``--max-new-tokens`` masked positions (default: up to the context length), or, with ``--mask-char``,
the prompt with every occurrence of that character masked (infilling: the rest is kept).
"""
from __future__ import annotations

import argparse
import inspect
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="sample text from a trained checkpoint",
        description="Encode --prompt with the checkpoint's tokenizer, sample --max-new-tokens tokens with the model's "
                    "incremental decoder (model.generate) and print prompt + continuation, each token as soon as it "
                    "is sampled.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="tokens to sample (default 200; mask-predict: masked tokens after the prompt, default "
                             "up to the context length, none with --mask-char)")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature > 0 (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    masked = parser.add_argument_group("mask-predict checkpoints (bidirectional models)")
    masked.add_argument("--iterations", type=int, default=10, metavar="N",
                        help="Mask-Predict refinement passes (default 10)")
    masked.add_argument("--mask-char", metavar="C", help="infill: every occurrence of this character in --prompt is "
                                                         "one masked token to predict; the rest of the prompt is kept")
    return parser


def mask_predict_ids(tokenizer, prompt: str, mask_id: int, new_tokens, block_size: int, mask_char=None):
    """The ids to decode: the prompt (``mask_char`` -> one ``mask_id`` each) and ``new_tokens`` masked positions after it.

    ``new_tokens`` None: up to ``block_size`` in all (none when the prompt has masked characters).
    """
    pieces = prompt.split(mask_char) if mask_char else [prompt]
    ids = []
    for index, piece in enumerate(pieces):
        if index:
            ids.append(mask_id)
        ids.extend(tokenizer.encode(piece) if piece else [])
    if new_tokens is None:
        new_tokens = 0 if len(pieces) > 1 else max(0, block_size - len(ids))
    ids.extend([mask_id] * new_tokens)
    if len(ids) > block_size:
        raise ValueError(f"the prompt ({len(ids) - new_tokens} tokens) and --max-new-tokens={new_tokens} make {len(ids)} "
                         f"tokens; a mask-predict model decodes one window of at most block_size={block_size} tokens")
    if mask_id not in ids:
        raise ValueError("nothing to predict: the prompt has no masked character and --max-new-tokens is 0")
    return ids


def _run_mask_predict(args, trained) -> int:
    import torch

    from ..model.mask_predict import mask_predict_decode

    if args.top_k is not None:
        raise ValueError("--top-k is not used by mask-predict decoding; accepted: leave it out (--temperature applies)")
    if args.mask_char is not None and len(args.mask_char) != 1:
        raise ValueError(f"--mask-char={args.mask_char!r} is invalid; accepted: one character")
    ids = mask_predict_ids(trained.tokenizer, args.prompt, trained.mask_id, args.max_new_tokens,
                           trained.config.data.block_size, args.mask_char)
    input_ids = torch.tensor([ids], dtype=torch.long, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    out = mask_predict_decode(trained.model, input_ids, trained.mask_id, iterations=args.iterations,
                              temperature=args.temperature, generator=generator)
    print(trained.tokenizer.decode(out[0].tolist()))
    return 0


class TextStreamer:
    """Prints the text of a growing sequence as it grows (the role of HF's ``TextStreamer``).

    The whole sequence is decoded at every new token and only the new part is written, so
    multi-token characters and subwords come out right; a trailing incomplete character (a
    cut UTF-8 sequence decodes to U+FFFD) is held back until it completes or the text ends.

    Args:
        tokenizer: has ``decode(ids) -> str``.
        prompt_ids: the ids already there (printed at once).
        out: a text stream (default ``sys.stdout``), flushed after every piece.
    """

    def __init__(self, tokenizer, prompt_ids, out=None):
        self.tokenizer, self.ids, self.out, self.printed = tokenizer, [int(i) for i in prompt_ids], out, ""
        self._write(final=False)

    def __call__(self, next_ids) -> None:
        """Take the new token (``next_ids [1]``) and print what it adds."""
        self.ids.append(int(next_ids[0]))
        self._write(final=False)

    def end(self) -> str:
        """Print the rest and a newline; returns the whole text."""
        self._write(final=True)
        self._emit("\n")
        return self.printed

    def _write(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids)
        if not final:
            text = text.rstrip("\ufffd")
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self._emit(text[len(self.printed):])
            self.printed = text

    def _emit(self, piece: str) -> None:
        out = self.out or sys.stdout
        out.write(piece)
        out.flush()


def sample(model, input_ids, max_new_tokens: int, *, temperature: float = 1.0, top_k=None, seed: int = 0,
           block_size=None, streamer=None):
    """Continue ``input_ids [1, T]``; uses ``model.generate`` when the model has one.

    The fallback (models without ``generate``) re-runs the full forward on the last
    ``block_size`` tokens per new token. ``streamer`` is called with each new token's ids ``[1]``
    (passed to ``model.generate`` when it takes one; otherwise called once the sample is done).
    """
    import torch

    from ..evaluate import model_logits

    torch.manual_seed(seed)
    generate = getattr(model, "generate", None)
    if callable(generate):
        accepted = inspect.signature(generate).parameters
        kwargs = {name: value for name, value in (("max_new_tokens", max_new_tokens), ("temperature", temperature),
                                                  ("top_k", top_k), ("streamer", streamer)) if name in accepted}
        if "generator" in accepted:
            kwargs["generator"] = torch.Generator(device=input_ids.device).manual_seed(seed)
        elif "seed" in accepted:
            kwargs["seed"] = seed
        out = generate(input_ids, **kwargs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if streamer is not None and "streamer" not in accepted:
            for column in range(input_ids.shape[1], out.shape[1]):
                streamer(out[:, column])
        return out
    generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    ids = input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            context = ids if block_size is None else ids[:, -block_size:]
            logits = model_logits(model, context)[:, -1].float() / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            ids = torch.cat([ids, torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)], dim=1)
            if streamer is not None:
                streamer(ids[:, -1])
    return ids


def run(args) -> int:
    import torch

    from ..train.loading import load_trained
    from .checks import check_device

    check_device(args.device)
    if args.iterations < 1:
        raise ValueError(f"--iterations={args.iterations} is invalid; accepted: an int >= 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens} is invalid; accepted: an int >= 0 (mask-predict), "
                         ">= 1 otherwise")
    if not args.temperature > 0:
        raise ValueError(f"--temperature={args.temperature} is invalid; accepted: a float > 0")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k={args.top_k} is invalid; accepted: an int >= 1")
    trained = load_trained(args.checkpoint, device=args.device)
    if trained.mask_predict:  # an empty prompt: start all-masked
        return _run_mask_predict(args, trained)
    if args.mask_char is not None:
        raise ValueError("--mask-char applies to mask-predict checkpoints (bidirectional models); this one is causal")
    args.max_new_tokens = 200 if args.max_new_tokens is None else args.max_new_tokens
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens} is invalid; accepted: an int >= 1")
    if not args.prompt:
        raise ValueError("--prompt is empty; accepted: at least one character")
    prompt_ids = torch.tensor([trained.tokenizer.encode(args.prompt)], dtype=torch.long, device=args.device)
    if trained.leaky:
        print("[LEAKY model: trained with a non-causal graph; its samples are not a valid LM result]")
    streamer = TextStreamer(trained.tokenizer, prompt_ids[0].tolist())
    with torch.no_grad():
        sample(trained.model, prompt_ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
               seed=args.seed, block_size=trained.config.data.block_size, streamer=streamer)
    streamer.end()
    return 0

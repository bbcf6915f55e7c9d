"""Each sampled token's log probability, read from llama.cpp's context as the token is sampled.

llama-cpp-python reports log probabilities only for models loaded with ``logits_all``, which keeps
an ``n_ctx x n_vocab`` float buffer (over 1 GB for a 150k-token vocabulary at 2k context) and copies
every prompt position's logits. The sampled position's logits are in the context anyway until the
next token is evaluated, so this reads that one row right after each sample instead: the cost is
one softmax over the vocabulary per token, paid only by requests that ask.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

from servers.runtime.events import TokenLogprob


class TokenRecorder:
    """The tokens sampled during one generation, with their log probabilities, handed out in the
    order the streamed text reaches them."""

    def __init__(self, llm: Llama, prompt: list[int], top: int) -> None:
        self.llm = llm
        self.top = top
        self._previous = list(prompt)  # what each token is detokenized after (leading spaces)
        self._pending: list[TokenLogprob] = []
        self._handed_bytes = 0  # bytes of the tokens handed out so far

    @contextmanager
    def recording(self) -> Iterator[TokenRecorder]:
        """Wrap the model's ``sample`` (which ``Llama.generate`` calls once per token) for the
        duration of one generation."""
        sample = self.llm.sample

        def recorded(**options: Any) -> int:
            token = sample(**options)
            self._record(token, options.get("idx"))
            return token

        self.llm.sample = recorded  # type: ignore[method-assign]
        try:
            yield self
        finally:
            del self.llm.sample  # the class's method again

    def _record(self, token: int, idx: int | None) -> None:
        llm = self.llm
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            return  # the end of the answer: never part of its text
        row = idx - llm.n_tokens if idx is not None else -1  # as Llama.sample addresses it
        pointer = llama_cpp.llama_get_logits_ith(llm.ctx, row)
        logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(llm.n_vocab(),))
        peak = float(logits.max())
        normalizer = peak + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))
        top = tuple(
            TokenLogprob(self._piece(int(alternative)), float(logits[alternative]) - normalizer)
            for alternative in _likeliest(logits, peak, self.top)
        )
        piece = self._piece(token)
        self._previous.append(token)
        self._pending.append(TokenLogprob(piece, float(logits[token]) - normalizer, top))

    def _piece(self, token: int) -> bytes:
        return self.llm.detokenize([token], prev_tokens=self._previous)

    def take(self, text_bytes: int) -> tuple[TokenLogprob, ...]:
        """The recorded tokens that end within the first ``text_bytes`` bytes of the answer and were
        not handed out yet (tokens of a held-back stop sequence stay behind)."""
        taken = []
        while self._pending and self._handed_bytes + len(self._pending[0].token) <= text_bytes:
            token = self._pending.pop(0)
            self._handed_bytes += len(token.token)
            taken.append(token)
        return tuple(taken)


def _likeliest(logits: np.ndarray, peak: float, count: int) -> np.ndarray:
    """The ``count`` largest logits' indices, largest first. A full argpartition of a 262k-token
    vocabulary costs milliseconds per token; the few tokens near the peak are found in a fraction."""
    if count == 0:
        return np.empty(0, dtype=np.intp)
    for margin in (4.0, 8.0, 16.0):
        candidates = np.flatnonzero(logits >= peak - margin)
        if len(candidates) >= count:
            break
    else:
        candidates = np.argpartition(logits, -count)[-count:]
    return candidates[np.argsort(-logits[candidates], kind="stable")[:count]]

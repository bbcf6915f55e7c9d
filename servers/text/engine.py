"""Text generation on llama.cpp. Pure Python: no grpc, no storage; runs in a job worker thread."""

from __future__ import annotations

import json
import re
import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama, LlamaGrammar
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from genmesh.errors import InvalidArgument, Unavailable, require, require_range
from servers.runtime.events import Reporter, TextDelta, TokenLogprob
from servers.runtime.model_cache import ModelCache
from servers.text.chat_templates import ChatFormatter
from servers.text.logprobs import TokenRecorder
from servers.text.models import ModelCatalog, ModelSpec
from servers.text.types import EmbedOutcome, EmbedRequest, FinishReason, TextOutcome, TextRequest

_EMPTY_RULE = re.compile(r"::=[ \t]*(\n|$)")
_SCHEMA_STRING_CHAR = r'char ::= [^"\\] |'
_JSON_STRING_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


@dataclass(frozen=True)
class LoadedText:
    """A GGUF model loaded for generation, with its chat template."""

    spec: ModelSpec
    llm: Llama
    formatter: ChatFormatter


class TextEngine:
    """One loaded GGUF model at a time; a request for another model swaps it. Embeddings use the same
    file in llama.cpp's embedding mode (a context of its own), loaded on first Embed. Both stay
    loaded until another model is needed unless a request's keep-alive says otherwise."""

    def __init__(self, catalog: ModelCatalog, *, n_ctx: int, n_threads: int, n_gpu_layers: int = 0) -> None:
        self.catalog = catalog
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.models: ModelCache[str, LoadedText] = ModelCache(self._load, keep_alive_seconds=0)
        self.embedders: ModelCache[str, Llama] = ModelCache(self._load_embedder, keep_alive_seconds=0)

    def check(self, request: TextRequest) -> None:
        """What is refused before queueing, without the model: an unknown model (NOT_FOUND) and a JSON
        schema that cannot be enforced (INVALID_ARGUMENT), each naming its field."""
        self.catalog.resolve(request.model)
        if request.json_output and request.json_schema is not None:
            schema_gbnf(request.json_schema)

    def preload(self) -> None:
        with self.models.use(self.catalog.resolve("").name):
            pass

    def close(self) -> None:
        """Unload both models (after the job using one, if any, lets go)."""
        self.models.close()
        self.embedders.close()

    def _load(self, name: str) -> LoadedText:
        spec = self.catalog.resolve(name)
        try:
            llm = Llama(
                model_path=str(self.catalog.ensure_file(spec)),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_gpu_layers=self.n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:  # llama.cpp refuses a broken or foreign file
            raise Unavailable(f"model: {name} could not be loaded ({exc})") from None
        formatter = ChatFormatter(
            {key: str(value) for key, value in llm.metadata.items()},
            bos_token=llm.detokenize([llm.token_bos()]).decode(errors="ignore"),
            eos_token=llm.detokenize([llm.token_eos()]).decode(errors="ignore"),
        )
        return LoadedText(spec, llm, formatter)

    def _load_embedder(self, name: str) -> Llama:
        """The model in embedding mode: mean pooling over the input's tokens, the whole input in one
        batch (pooling needs it), the same context length as generation."""
        path = self.catalog.ensure_file(self.catalog.resolve(name))
        try:
            return Llama(
                model_path=str(path), embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN,
                n_ctx=self.n_ctx, n_batch=self.n_ctx, n_ubatch=self.n_ctx, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, n_gpu_layers=self.n_gpu_layers, verbose=False,
            )  # fmt: skip
        except (ValueError, RuntimeError, OSError) as exc:
            raise Unavailable(f"model: {name} could not be loaded for embeddings ({exc})") from None

    def _grammar(self, request: TextRequest) -> LlamaGrammar | None:
        if not request.json_output:
            return None
        if request.json_schema is None:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_string(schema_gbnf(request.json_schema), verbose=False)

    def _prompt_tokens(self, loaded: LoadedText, request: TextRequest) -> tuple[list[int], tuple[str, ...]]:
        """Token ids of the prompt and the stop strings. A raw prompt is sent as is (control tokens
        included: Generate is for people who write their own templates); chat message contents are
        tokenized as plain text between the template's control tokens."""
        llm = loaded.llm
        if not request.is_chat:
            tokens = llm.tokenize((request.prompt or "").encode(), add_bos=True, special=True)
            return tokens, request.sampling.stop
        pieces, template_stops = loaded.formatter.pieces(request.messages)
        tokens: list[int] = []
        for index, (text, is_template) in enumerate(pieces):
            tokens += llm.tokenize(text.encode(), add_bos=index == 0, special=is_template)
        return tokens, tuple(dict.fromkeys((*template_stops, *request.sampling.stop)))

    def generate(self, request: TextRequest, reporter: Reporter) -> TextOutcome:
        with self.models.use(self.catalog.resolve(request.model).name, request.keep_alive_seconds) as loaded:
            return self._generate(loaded, request, reporter)

    def _generate(self, loaded: LoadedText, request: TextRequest, reporter: Reporter) -> TextOutcome:
        llm = loaded.llm
        sampling = request.sampling
        prompt, stops = self._prompt_tokens(loaded, request)
        prompt_tokens = len(prompt)
        room = self.n_ctx - prompt_tokens
        if room < 1:
            field = "messages" if request.is_chat else "prompt"
            raise InvalidArgument(
                f"{field}: {prompt_tokens} tokens leaves no room in the model's context of {self.n_ctx} tokens",
                field=field,
            )
        max_tokens = min(sampling.max_tokens, room)
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        grammar = self._grammar(request)

        if sampling.seed is not None:
            # Reusing the cached prompt prefix evaluates fewer tokens in a different batch shape,
            # which changes the logits slightly; a fixed seed must give the same text, so start clean.
            llm.reset()
        started = time.monotonic()
        first_token_at = last_token_at = None
        pieces: list[str] = []
        completion_tokens = 0
        finish = FinishReason.STOP
        recorder = TokenRecorder(llm, prompt, request.logprobs) if request.logprobs is not None else None
        logprobs: list[TokenLogprob] = []
        text_bytes = 0
        with recorder.recording() if recorder else nullcontext():
            stream = llm.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                min_p=sampling.min_p,
                repeat_penalty=sampling.repeat_penalty,
                seed=seed,
                stop=list(stops),
                grammar=grammar,
                stream=True,
            )
            try:
                for chunk in stream:
                    reporter.check_cancelled()  # between tokens: a cancel stops within one token
                    choice = chunk["choices"][0]
                    if choice["finish_reason"] is not None:
                        finish = FinishReason.LENGTH if choice["finish_reason"] == "length" else FinishReason.STOP
                        if not choice["text"]:
                            break
                    # llama-cpp-python streams one chunk per sampled token (text may be empty while a
                    # multi-byte character is incomplete), so chunks count completion tokens.
                    completion_tokens += 1
                    last_token_at = time.monotonic()
                    first_token_at = first_token_at or last_token_at
                    pieces.append(choice["text"])
                    taken: tuple[TokenLogprob, ...] = ()
                    if recorder:
                        text_bytes += len(choice["text"].encode())
                        taken = recorder.take(text_bytes)
                        logprobs.extend(taken)
                    reporter.output(TextDelta(choice["text"], logprobs=taken), completion_tokens, max_tokens)
            finally:
                stream.close()
        ended = time.monotonic()
        decode_seconds = (last_token_at - first_token_at) if first_token_at and last_token_at else 0.0
        return TextOutcome(
            text="".join(pieces),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            time_to_first_token_ms=((first_token_at or ended) - started) * 1000.0,
            tokens_per_second=(completion_tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0,
            total_seconds=ended - started,
            model=loaded.spec.name,
            seed=seed,
            logprobs=tuple(logprobs),
        )

    def embed(self, request: EmbedRequest, reporter: Reporter) -> EmbedOutcome:
        spec = self.catalog.resolve(request.model)
        with self.embedders.use(spec.name, request.keep_alive_seconds) as llm:
            return self._embed(spec, llm, request, reporter)

    def _embed(self, spec: ModelSpec, llm: Llama, request: EmbedRequest, reporter: Reporter) -> EmbedOutcome:
        size = llm.n_embd()
        require_range(request.dimensions, "dimensions", 0, size)
        vectors, counts = [], []
        for index, text in enumerate(request.inputs):
            reporter.check_cancelled()  # between inputs
            tokens = len(llm.tokenize(text.encode(), add_bos=True))
            require(
                tokens <= self.n_ctx,
                f"inputs[{index}]",
                f"{tokens} tokens is more than the model's context of {self.n_ctx} tokens",
            )
            vector = llm.embed(text, normalize=False, truncate=False)
            vectors.append(_unit(vector[: request.dimensions or size]))
            counts.append(tokens)
            reporter.progress(index + 1, len(request.inputs))
        return EmbedOutcome(tuple(vectors), tuple(counts), spec.name)


def _unit(vector: list[float]) -> tuple[float, ...]:
    norm = sum(value * value for value in vector) ** 0.5
    return tuple(value / norm for value in vector) if norm > 0 else tuple(vector)


def schema_gbnf(schema: dict[str, Any]) -> str:
    """The grammar that makes the model write JSON valid for ``schema``; INVALID_ARGUMENT naming
    ``response_format.json_schema`` when the schema cannot be enforced."""
    field = "response_format.json_schema"
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare KeyErrors/TypeErrors for schemas it cannot use
        detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__} at {exc}"
        raise InvalidArgument(
            f"{field}: not a JSON schema this server can enforce ({detail}); supported: type, properties, "
            "required, items, enum, const, anyOf/oneOf, string/array length limits, pattern",
            field=field,
        ) from None
    # The converter's string characters include raw control characters (a newline inside a string),
    # which JSON forbids: keep them out, as llama.cpp's own JSON grammar does. Escapes stay allowed.
    gbnf = gbnf.replace(_SCHEMA_STRING_CHAR, _JSON_STRING_CHAR)
    # A rule with an empty body (e.g. from "enum": []) makes llama.cpp's grammar parser fail,
    # and sampling with a failed grammar crashes the process: refuse it here.
    if _EMPTY_RULE.search(gbnf):
        raise InvalidArgument(
            f"{field}: the schema allows no value at all (an empty enum, anyOf or oneOf?)", field=field
        )
    return gbnf

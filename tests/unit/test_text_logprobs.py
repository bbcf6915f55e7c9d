"""Token log probabilities from the built-in GGUF model: the same numbers llama-cpp-python reports
with ``logits_all`` (its own, memory-hungry way), tokens that spell the answer exactly, and nothing
changed for requests that do not ask."""

from __future__ import annotations

import math

import pytest
from llama_cpp import Llama

from genmesh.errors import InvalidArgument
from genmesh.text.v1 import text_pb2
from servers.runtime.events import Preview, TextDelta
from servers.runtime.settings import parse_settings
from servers.text import convert
from servers.text.engine import TextEngine
from servers.text.models import ModelCatalog
from servers.text.settings import TextSettings
from servers.text.types import Sampling, TextRequest

PROMPT = "The capital of France is"
GREEDY = Sampling(max_tokens=8, temperature=0.0, repeat_penalty=1.0, seed=1)


class Collect:
    def __init__(self) -> None:
        self.deltas: list[TextDelta] = []

    def check_cancelled(self) -> None:
        pass

    def progress(self, step: int, total_steps: int, preview: Preview | None = None) -> None:
        pass

    def output(self, payload, step=None, total_steps=None, preview=None) -> None:
        self.deltas.append(payload)


@pytest.fixture(scope="module")
def engine() -> TextEngine:
    settings = parse_settings(TextSettings, [])
    catalog = ModelCatalog(
        settings.resolved_models_dir(), settings.model_path, settings.model, settings.pulled_models()
    )
    return TextEngine(catalog, n_ctx=512, n_threads=2)


def test_greedy_tokens_spell_the_answer_and_lead_their_alternatives(engine: TextEngine) -> None:
    reporter = Collect()
    outcome = engine.generate(TextRequest(prompt=PROMPT, sampling=GREEDY, logprobs=3), reporter)
    tokens = outcome.logprobs
    assert len(tokens) == outcome.completion_tokens == 8
    assert b"".join(token.token for token in tokens).decode() == outcome.text
    assert [token for delta in reporter.deltas for token in delta.logprobs] == list(tokens)
    for token in tokens:
        assert token.logprob <= 0.0
        assert len(token.top) == 3
        assert [alt.logprob for alt in token.top] == sorted((alt.logprob for alt in token.top), reverse=True)
        # Greedy without a repeat penalty takes the likeliest token.
        assert token.top[0].token == token.token and token.top[0].logprob == pytest.approx(token.logprob)
    with engine.models.use(outcome.model) as loaded:
        assert "sample" not in vars(loaded.llm)  # the model's own sample method again


def test_log_probabilities_match_llama_cpp_pythons_own(engine: TextEngine) -> None:
    outcome = engine.generate(TextRequest(prompt=PROMPT, sampling=GREEDY, logprobs=0), Collect())
    reference = Llama(model_path=str(engine.catalog.ensure_file(engine.catalog.resolve(""))), n_ctx=512,
                      n_threads=2, logits_all=True, verbose=False)  # fmt: skip
    expected = reference.create_completion(
        PROMPT, max_tokens=8, temperature=0.0, repeat_penalty=1.0, seed=1, logprobs=1
    )["choices"][0]["logprobs"]
    assert [token.token.decode() for token in outcome.logprobs] == expected["tokens"]
    for ours, theirs in zip(outcome.logprobs, expected["token_logprobs"], strict=True):
        assert math.isclose(ours.logprob, theirs, abs_tol=1e-3)
        assert ours.top == ()


def test_tokens_of_a_stop_sequence_are_not_reported(engine: TextEngine) -> None:
    first = engine.generate(TextRequest(prompt=PROMPT, sampling=GREEDY), Collect())
    stop = " " + first.text.split()[2]  # a word in the middle of the greedy answer, on a token boundary
    request = TextRequest(prompt=PROMPT, sampling=Sampling(**{**vars(GREEDY), "stop": (stop,)}), logprobs=1)
    outcome = engine.generate(request, Collect())
    assert stop not in outcome.text and first.text.startswith(outcome.text)
    assert b"".join(token.token for token in outcome.logprobs).decode() == outcome.text


def test_requests_without_logprobs_get_none(engine: TextEngine) -> None:
    reporter = Collect()
    outcome = engine.generate(TextRequest(prompt=PROMPT, sampling=GREEDY), reporter)
    assert outcome.logprobs == () and all(delta.logprobs == () for delta in reporter.deltas)


@pytest.mark.parametrize("value", [-1, 21])
def test_logprobs_out_of_range_names_the_field(value: int) -> None:
    with pytest.raises(InvalidArgument, match=r"^logprobs must be between 0 and 20 ") as error:
        convert.generate_request(text_pb2.GenerateRequest(prompt="hi", logprobs=value))
    assert error.value.field == "logprobs"
    with pytest.raises(InvalidArgument, match=r"^logprobs must be between 0 and 20 "):
        convert.chat_request(text_pb2.ChatRequest(messages=[text_pb2.ChatMessage(role="user", content="hi")],
                                                  logprobs=value))  # fmt: skip


def test_result_and_delta_carry_the_tokens_as_text_and_bytes() -> None:
    from servers.runtime.events import TokenLogprob

    tokens = (TokenLogprob(b" caf\xc3", -0.5, (TokenLogprob(b" caf\xc3", -0.5), TokenLogprob(b" the", -1.0))),)
    [message] = convert.token_logprobs(tokens)
    assert message.bytes == b" caf\xc3" and message.token == " caf\ufffd" and message.logprob == -0.5
    assert [alt.token for alt in message.top_logprobs] == [" caf\ufffd", " the"]

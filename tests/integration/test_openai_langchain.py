"""A second real OpenAI client against the gateway: LangChain's ``ChatOpenAI`` and
``OpenAIEmbeddings`` (langchain-openai), as a LangChain user points them at genmesh with
``base_url=<gateway>/v1``. Runs on the session mesh; nothing leaves loopback (tracing is off, and
the embeddings client is told not to fetch tiktoken's tables to count tokens)."""

from __future__ import annotations

import math
import os

import pytest

pytestmark = pytest.mark.integration

os.environ.setdefault("LANGSMITH_TRACING", "false")
langchain_openai = pytest.importorskip("langchain_openai")

MODEL = "gemma-3-270m-q4_k_m"


@pytest.fixture(scope="module")
def chat(gateway_url: str, api_key: str):
    return langchain_openai.ChatOpenAI(
        model=MODEL, base_url=f"{gateway_url}/v1", api_key=api_key, max_tokens=8, temperature=0, max_retries=0
    )


def test_langchain_chat_invokes_and_streams(chat) -> None:
    answer = chat.invoke([("system", "Answer briefly."), ("user", "Say hi.")])
    assert answer.content.strip() and answer.response_metadata["finish_reason"] in ("stop", "length")
    assert answer.usage_metadata["output_tokens"] >= 1
    chunks = list(chat.stream("Count to three."))
    assert len(chunks) > 1 and "".join(chunk.content for chunk in chunks).strip()
    assert sum(chunks[1:], chunks[0]).content == "".join(chunk.content for chunk in chunks)


def test_langchain_structured_output_is_json_schema(chat) -> None:
    roomier = chat.model_copy(update={"max_tokens": 48})  # a whole object, closed by the grammar
    schema = {
        "title": "Pet",
        "description": "A pet.",
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}},
        "required": ["name"],
    }
    pet = roomier.with_structured_output(schema, method="json_schema").invoke("Name a pet.")
    assert isinstance(pet, dict) and isinstance(pet["name"], str)


def test_langchain_embeddings(gateway_url: str, api_key: str) -> None:
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=MODEL, base_url=f"{gateway_url}/v1", api_key=api_key, check_embedding_ctx_length=False, max_retries=0
    )
    one, two = embeddings.embed_documents(["a red apple", "a green pear"])
    query = embeddings.embed_query("a red apple")
    assert len(one) == len(two) == len(query) > 0
    assert math.isclose(sum(a * b for a, b in zip(one, query, strict=True)), sum(a * a for a in one), rel_tol=1e-3)

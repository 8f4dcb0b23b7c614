"""The LLM client against the scripted OpenAI-compatible stub, over real HTTP on 127.0.0.1.

Nothing is mocked: `OpenAIClient` talks HTTP to `StubServer`, which records every request, so the
tests check what went over the wire. Every test runs twice: on the direct path (plain http, the
lean pool of llm/transport.py) and through the openai SDK (what TLS, proxies and Azure use).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import openai
import psutil
import pytest

from gitops_acp import llm, retry
from gitops_acp.errors import PermanentLLMError, TemporaryLLMError
from gitops_acp.llm import client as llm_client
from gitops_acp.llm import openai_client
from gitops_acp.llm.client import Completion, LLMConfig, LLMConfigError, ToolSpec
from gitops_acp.llm.openai_client import OpenAIClient
from gitops_acp.resources.common import Message
from gitops_acp.testing import llm_stub
from gitops_acp.testing.llm_stub import StubServer, load_script

API_KEY = "sk-test-0123456789abcdef"
REPO_ROOT = Path(__file__).resolve().parents[1]


DIRECT = {"direct": True, "sdk": False}
PATH = "direct"


@pytest.fixture(autouse=True, params=list(DIRECT))
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with `OpenAIClient` sending directly, then through the SDK."""
    global PATH
    PATH = request.param
    yield request.param
    PATH = "direct"


def new_client(**kwargs: Any) -> OpenAIClient:
    return OpenAIClient(direct_http=DIRECT[PATH], **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    with StubServer(max_seconds=600) as stub:
        yield stub


@pytest.fixture
def stub(server: StubServer) -> StubServer:
    """The shared stub with no script and no records."""
    server.set_script(None)
    server.reset()
    return server


def config(stub: StubServer, **overrides: Any) -> LLMConfig:
    values: dict[str, Any] = {
        "provider": "openai",
        "model": "stub-model",
        "api_key": API_KEY,
        "base_url": stub.url,
    }
    values.update(overrides)
    return LLMConfig(**values)


def complete(
    cfg: LLMConfig, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
) -> Completion:
    """Run one complete() with a fresh client, closing it afterwards."""

    async def go() -> Completion:
        client = new_client()
        try:
            return await client.complete(cfg, messages, tools)
        finally:
            await client.aclose()

    return asyncio.run(go())


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


WEATHER = ToolSpec(
    name="weather__get",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# --- answers -----------------------------------------------------------------------------------


def test_final_answer(stub: StubServer) -> None:
    result = complete(config(stub), user("hello there"))

    assert result.content == "Echo: hello there"
    assert result.tool_calls == ()
    assert result.finish_reason == "stop"
    assert result.message == {"role": "assistant", "content": "Echo: hello there"}
    Message.model_validate(result.message)  # what the Task controller appends to its context window
    assert result.prompt_tokens == 5  # words in the request's messages
    assert result.completion_tokens == 3


def test_tool_calls_are_parsed_with_ids_and_json_arguments(stub: StubServer) -> None:
    stub.set_script(
        {
            "rules": [
                {
                    "match": "weather",
                    "toolCalls": [
                        {"name": "weather__get", "arguments": {"city": "Paris"}},
                        {"name": "weather__get", "arguments": {"city": "Tokyo", "units": "C"}},
                    ],
                }
            ]
        }
    )

    result = complete(config(stub), user("weather in Paris and Tokyo?"), [WEATHER])

    assert result.finish_reason == "tool_calls"
    assert result.content is None
    assert [c.name for c in result.tool_calls] == ["weather__get", "weather__get"]
    assert [json.loads(c.arguments) for c in result.tool_calls] == [
        {"city": "Paris"},
        {"city": "Tokyo", "units": "C"},
    ]
    ids = [c.id for c in result.tool_calls]
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") for i in ids)
    assert result.message == {
        "role": "assistant",
        "content": "",
        "toolCalls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.tool_calls
        ],
    }
    Message.model_validate(result.message)


def test_tool_result_round_trip_in_our_message_shape(stub: StubServer) -> None:
    stub.set_script(
        {
            "rules": [
                {
                    "match": "weather",
                    "when": "first",
                    "toolCalls": [{"name": "weather__get", "arguments": {}}],
                },
                {"match": "weather", "when": "tool", "content": "It is {tool} ({user})"},
            ]
        }
    )
    cfg = config(stub)
    window = user("weather?")
    first = complete(cfg, window, [WEATHER])
    call = first.tool_calls[0]
    window += [first.message, {"role": "tool", "toolCallId": call.id, "content": "sunny"}]

    second = complete(cfg, window, [WEATHER])

    assert second.content == "It is sunny (weather?)"
    sent = stub.requests()[-1]["body"]["messages"]
    assert sent[2] == {
        "role": "assistant",
        "content": None,  # null next to tool calls: Anthropic's endpoint rejects empty text
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "weather__get", "arguments": "{}"}}
        ],
    }
    assert sent[3] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}


def test_message_conversion_to_openai_shape() -> None:
    window: list[dict[str, Any]] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "alice"},
        {
            "role": "assistant",
            "content": "thinking",
            "toolCalls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "toolCallId": "c1", "content": "r", "name": "f"},
        {"role": "assistant", "content": "done", "reasoningContent": "never sent"},
    ]

    assert llm_client.to_openai_messages(window) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "alice"},
        {
            "role": "assistant",
            "content": "thinking",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "assistant", "content": "done"},
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "robot", "content": "x"}, "invalid role 'robot'"),
        ({"role": "tool", "content": "x"}, "tool message without toolCallId"),
        ({"role": "assistant", "toolCalls": [{"function": {"name": "f"}}]}, "tool call without id"),
    ],
)
def test_message_conversion_rejects_what_no_provider_accepts(message: dict[str, Any], error: str) -> None:
    with pytest.raises(PermanentLLMError, match=error):
        llm_client.to_openai_messages([{"role": "user", "content": "x"}, message])


@pytest.mark.parametrize(
    ("dumped", "message"),
    [
        (
            {
                "role": "assistant",
                "content": "hi",
                "reasoning_content": "hmm",
                "annotations": [],
                "audio": {},
            },
            {"role": "assistant", "content": "hi"},
        ),
        (
            {"role": "assistant", "refusal": "I can't help with that."},
            {"role": "assistant", "content": "I can't help with that."},
        ),
        ({"role": "assistant"}, {"role": "assistant", "content": ""}),
    ],
)
def test_assistant_message_has_exactly_the_context_window_fields(
    dumped: dict[str, Any], message: dict[str, Any]
) -> None:
    assert llm_client.assistant_message(dumped) == message


def test_server_extras_never_reach_the_context_window(stub: StubServer) -> None:
    reply = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "42",
                    "reasoning_content": "thinking...",
                    "refusal": None,
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    stub.set_script({"rules": [{"body": reply}]})

    result = complete(config(stub), user("x"))
    assert result.message == {"role": "assistant", "content": "42"}
    Message.model_validate(result.message)


def test_refusal_is_the_answer(stub: StubServer) -> None:
    reply = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "I can't."}}]}
    stub.set_script({"rules": [{"body": reply}]})

    result = complete(config(stub), user("x"))

    assert result.content == "I can't."
    assert result.message == {"role": "assistant", "content": "I can't."}


# --- parameters --------------------------------------------------------------------------------


def test_every_parameter_reaches_the_request(stub: StubServer) -> None:
    cfg = config(
        stub,
        model="my-model",
        temperature=0.25,
        max_tokens=77,
        top_p=0.9,
        top_k=40,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
    )

    complete(cfg, user("params"), [WEATHER])

    (record,) = stub.requests()
    body = record["body"]
    assert body["model"] == "my-model"
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 77
    assert body["top_p"] == 0.9
    assert body["top_k"] == 40
    assert body["frequency_penalty"] == 0.5
    assert body["presence_penalty"] == -0.5
    assert body["tool_choice"] == "auto"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": WEATHER.name,
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        }
    ]


def test_unset_parameters_and_tools_are_not_sent(stub: StubServer) -> None:
    complete(config(stub), user("bare"))

    (record,) = stub.requests()
    assert set(record["body"]) == {"model", "messages"}


def test_validate_sends_a_one_token_completion_with_the_other_parameters(stub: StubServer) -> None:
    cfg = config(stub, temperature=0.1, max_tokens=500, top_k=3)

    async def go() -> None:
        client = new_client()
        try:
            await client.validate(cfg)
        finally:
            await client.aclose()

    asyncio.run(go())

    (record,) = stub.requests()
    assert record["body"]["messages"] == [{"role": "user", "content": "test"}]
    assert record["body"]["max_tokens"] == 1
    assert record["body"]["temperature"] == 0.1
    assert record["body"]["top_k"] == 3


# --- the API key -------------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_and_never_recorded(stub: StubServer) -> None:
    stub.set_script({"apiKey": API_KEY})

    assert complete(config(stub), user("auth")).content == "Echo: auth"

    (record,) = stub.requests()
    assert record["authorization"] is True
    assert record["authScheme"] == "Bearer"
    assert API_KEY not in json.dumps(stub.requests())


def test_wrong_key_is_permanent_and_the_key_is_never_in_the_error(stub: StubServer) -> None:
    stub.set_script({"apiKey": "sk-the-right-one"})

    with pytest.raises(PermanentLLMError) as caught:
        complete(config(stub), user("auth"))

    assert caught.value.status_code == 401
    assert str(caught.value) == "LLM request failed: 401 Unauthorized: Incorrect API key provided."
    assert API_KEY not in str(caught.value)


def test_a_provider_echoing_the_key_is_redacted(stub: StubServer) -> None:
    stub.set_script({"rules": [{"status": 400, "message": f"bad key {API_KEY} for model"}]})

    with pytest.raises(PermanentLLMError) as caught:
        complete(config(stub), user("echo my key"))

    assert API_KEY not in str(caught.value)
    assert str(caught.value) == "LLM request failed: 400 Bad Request: bad key *** for model"


def test_repr_never_shows_the_key(stub: StubServer) -> None:
    cfg = config(stub)
    assert API_KEY not in repr(cfg)
    assert API_KEY not in str(cfg)
    assert "api_key" not in repr(cfg)


def test_rotated_key_gets_its_own_client(stub: StubServer) -> None:
    async def go() -> None:
        client = new_client()
        try:
            stub.set_script({"apiKey": "sk-old"})
            await client.complete(config(stub, api_key="sk-old"), user("one"))
            stub.set_script({"apiKey": "sk-new"})
            await client.complete(config(stub, api_key="sk-new"), user("two"))
            with pytest.raises(PermanentLLMError):
                await client.complete(config(stub, api_key="sk-old"), user("three"))
        finally:
            await client.aclose()

    asyncio.run(go())
    assert [r["status"] for r in stub.requests()] == [200, 200, 401]


@pytest.mark.parametrize(("api_type", "header"), [("AZURE", "apiKeyHeader"), ("AZURE_AD", "authorization")])
def test_azure_deployments_and_credentials(stub: StubServer, api_type: str, header: str) -> None:
    stub.set_script({"apiKey": API_KEY})
    base = stub.url.removesuffix("/v1")
    cfg = config(stub, base_url=base, api_type=api_type.lower(), api_version="2024-10-21", model="gpt4o-prod")

    assert complete(cfg, user("azure")).content == "Echo: azure"

    (record,) = stub.requests()
    assert record["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
    assert record["query"] == "api-version=2024-10-21"
    assert record[header] is True


def test_plain_http_goes_direct_and_the_sdk_path_stays_the_sdk(stub: StubServer, path: str) -> None:
    assert complete(config(stub), user("which way")).content == "Echo: which way"

    (record,) = stub.requests()
    agent = str(record["userAgent"])
    assert agent.startswith("gitops-acp/" if path == "direct" else "AsyncOpenAI/Python"), agent


@pytest.mark.parametrize(
    ("overrides", "env", "direct"),
    [
        ({"base_url": "http://vllm.internal:8000/v1"}, {}, ("vllm.internal", 8000, "/v1/chat/completions")),
        ({"base_url": "http://ollama/v1/"}, {}, ("ollama", 80, "/v1/chat/completions")),
        ({"base_url": "http://127.0.0.1:9/v1?a=b"}, {}, ("127.0.0.1", 9, "/v1/chat/completions?a=b")),
        ({"base_url": "https://api.openai.com/v1"}, {}, None),
        ({"base_url": "http://vllm:8000/v1"}, {"http_proxy": "http://proxy:3128"}, None),
        ({"base_url": "http://az", "api_type": "azure", "api_version": "2024-10-21"}, {}, None),
    ],
)
def test_which_endpoints_go_direct(
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, Any],
    env: dict[str, str],
    direct: tuple[str, int, str] | None,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = LLMConfig(**{"provider": "openai", "model": "m", "api_key": API_KEY, **overrides})

    endpoint = openai_client._direct_endpoint(cfg)

    assert (endpoint and (endpoint.host, endpoint.port, endpoint.path)) == direct


# --- errors ------------------------------------------------------------------------------------


def test_400_is_permanent_with_the_provider_message(stub: StubServer) -> None:
    stub.set_script(
        {"rules": [{"status": 400, "message": "This model's maximum context length is 8192 tokens."}]}
    )

    with pytest.raises(PermanentLLMError) as caught:
        complete(config(stub), user("too long"))

    assert caught.value.status_code == 400
    assert caught.value.retry_after is None
    assert str(caught.value) == (
        "LLM request failed: 400 Bad Request: This model's maximum context length is 8192 tokens."
    )


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_other_4xx_are_permanent(stub: StubServer, status: int) -> None:
    stub.set_script({"rules": [{"status": status, "message": f"nope {status}"}]})

    with pytest.raises(PermanentLLMError) as caught:
        complete(config(stub), user("x"))

    assert caught.value.status_code == status
    assert str(caught.value).endswith(f": nope {status}")
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_retryable_statuses_are_temporary(stub: StubServer, status: int) -> None:
    stub.set_script({"rules": [{"status": status, "message": "try later"}]})

    with pytest.raises(TemporaryLLMError) as caught:
        complete(config(stub), user("x"))

    assert caught.value.status_code == status
    assert caught.value.retryable
    assert str(caught.value).startswith(f"LLM request failed: {status} ")


@pytest.mark.parametrize(("rule", "expected"), [({"retryAfter": 7}, 7.0), ({"retryAfterMs": 1500}, 1.5)])
def test_retry_after_is_parsed(stub: StubServer, rule: dict[str, Any], expected: float) -> None:
    stub.set_script({"rules": [{"status": 429, "message": "slow down", **rule}]})

    with pytest.raises(TemporaryLLMError) as caught:
        complete(config(stub), user("x"))

    assert caught.value.retry_after == expected


def test_retry_after_as_http_date() -> None:
    """One parser for every client (gitops_acp/retry.py): seconds, milliseconds, HTTP dates, garbage."""
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    seconds = retry.retry_after({"retry-after": when})
    assert seconds is not None
    assert 25 < seconds <= 31
    assert retry.retry_after({"retry-after": when}, now=time.time() + 60) == 0.0  # passed: no wait
    assert retry.retry_after({"retry-after": "7"}) == 7.0
    assert retry.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry.retry_after({"retry-after": "garbage"}) is None
    assert retry.retry_after({}) is None


def test_non_json_error_body_is_shown_as_text(stub: StubServer) -> None:
    stub.set_script({"rules": [{"status": 502, "body": "<html>  Bad   gateway </html>"}]})

    with pytest.raises(TemporaryLLMError) as caught:
        complete(config(stub), user("x"))

    assert str(caught.value) == "LLM request failed: 502 Bad Gateway: <html> Bad gateway </html>"


def test_connection_refused_is_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = LLMConfig(provider="openai", model="m", api_key=API_KEY, base_url=f"http://127.0.0.1:{port}/v1")

    with pytest.raises(TemporaryLLMError) as caught:
        complete(cfg, user("anyone?"))

    assert f"cannot reach http://127.0.0.1:{port}/v1" in str(caught.value)
    assert API_KEY not in str(caught.value)


def test_timeout_is_temporary(stub: StubServer) -> None:
    stub.set_script({"rules": [{"delayMs": 1000}]})

    started = time.monotonic()
    with pytest.raises(TemporaryLLMError, match=r"timed out after 0.2s"):
        complete(config(stub, timeout=0.2), user("slow"))

    assert time.monotonic() - started < 0.9


def test_delay_alone_keeps_the_default_reply(stub: StubServer) -> None:
    stub.set_script({"rules": [{"delayMs": 50}]})
    started = time.monotonic()
    assert complete(config(stub), user("slow")).content == "Echo: slow"
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("status", [500, 429])
def test_one_http_request_per_call_even_on_retryable_errors(stub: StubServer, status: int) -> None:
    stub.set_script({"rules": [{"status": status, "message": "boom"}]})

    with pytest.raises(TemporaryLLMError):
        complete(config(stub), user("once"))

    assert len(stub.requests()) == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"choices": []}, "no choices"),
        ({"id": "x"}, "no choices"),
        ("just text", "expected a JSON object, got str"),
        ({"choices": [{"index": 0}]}, "a choice without a message"),
        ({"error": {"message": "upstream exploded"}}, "upstream exploded"),
    ],
)
def test_invalid_response_is_temporary(stub: StubServer, body: Any, error: str) -> None:
    stub.set_script({"rules": [{"body": body}]})

    with pytest.raises(TemporaryLLMError, match=error):
        complete(config(stub), user("x"))


def test_missing_usage_counts_zero(stub: StubServer) -> None:
    reply = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    stub.set_script({"rules": [{"body": reply}]})

    result = complete(config(stub), user("x"))

    assert (result.content, result.prompt_tokens, result.completion_tokens) == ("hi", 0, 0)


def test_usage_override(stub: StubServer) -> None:
    stub.set_script({"rules": [{"content": "ok", "usage": {"promptTokens": 1000, "completion_tokens": 7}}]})
    result = complete(config(stub), user("x"))
    assert (result.prompt_tokens, result.completion_tokens) == (1000, 7)


# --- `times` and rule selection ----------------------------------------------------------------


def test_times_falls_through_to_the_next_rule(stub: StubServer) -> None:
    stub.set_script(
        {
            "rules": [
                {"match": "flaky", "times": 2, "status": 500, "message": "overloaded"},
                {"match": "flaky", "content": "finally"},
            ]
        }
    )
    cfg = config(stub)

    outcomes: list[str] = []
    for _ in range(3):
        try:
            outcomes.append(complete(cfg, user("flaky task")).content or "")
        except TemporaryLLMError as exc:
            outcomes.append(f"error {exc.status_code}")
    # `times` counts per conversation (first user message): another one starts afresh.
    with pytest.raises(TemporaryLLMError):
        complete(cfg, user("another flaky task"))

    assert outcomes == ["error 500", "error 500", "finally"]


def test_when_first_and_tool(stub: StubServer) -> None:
    stub.set_script(
        {
            "rules": [
                {"when": "first", "content": "first turn"},
                {"when": "tool", "content": "after a tool"},
            ]
        }
    )
    cfg = config(stub)
    window = [{"role": "user", "content": "q"}]
    assert complete(cfg, window).content == "first turn"
    window += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "again"}]
    assert complete(cfg, window).content == "Echo: again"


def test_model_rule_and_placeholders_in_arguments(stub: StubServer) -> None:
    stub.set_script(
        {
            "rules": [
                {"model": "^other$", "status": 404, "message": "The model `other` does not exist"},
                {"toolCalls": [{"name": "echo", "arguments": {"said": '{user} "quoted"'}}]},
            ]
        }
    )
    with pytest.raises(PermanentLLMError, match="does not exist"):
        complete(config(stub, model="other"), user("x"))

    result = complete(config(stub), user('say "hi"'))
    assert json.loads(result.tool_calls[0].arguments) == {"said": 'say "hi" "quoted"'}


# --- the stub as a strict server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "error"),
    [
        ([{"role": "user", "content": "x"}, {"role": "tool", "toolCallId": "c9", "content": "r"}], "c9"),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "toolCalls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "user", "content": "where is my result?"},
            ],
            "missing: c1",
        ),
    ],
)
def test_stub_rejects_tool_message_sequences_openai_rejects(
    stub: StubServer, window: list[dict[str, Any]], error: str
) -> None:
    with pytest.raises(PermanentLLMError, match=error):
        complete(config(stub), window)


def test_stub_http_control_endpoints(stub: StubServer) -> None:
    base = stub.url.removesuffix("/v1")
    with httpx2.Client() as http:
        script = {"rules": [{"content": "scripted over HTTP"}]}
        assert http.post(f"{base}/_stub/script", json=script).status_code == 200
        bad = http.post(f"{base}/_stub/script", json={"rules": [{"when": "sometimes"}]})
        assert bad.status_code == 400
        assert "rules[0].when" in bad.json()["error"]["message"]
        assert complete(config(stub), user("x")).content == "scripted over HTTP"
        models = http.get(f"{stub.url}/models").json()
        assert models["data"][0]["id"] == "stub-model"
        recorded = http.get(f"{base}/_stub/requests").json()
        assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/models"]
        assert http.post(f"{base}/_stub/reset").status_code == 200
        assert http.get(f"{base}/_stub/requests").json() == []


def test_stub_records_are_bounded() -> None:
    async def go() -> None:
        async with StubServer(max_records=3) as stub:
            client = new_client()
            try:
                for i in range(5):
                    await client.complete(config(stub), user(f"n{i}"))
            finally:
                await client.aclose()
            assert [r["body"]["messages"][1]["content"] for r in stub.requests()] == ["n2", "n3", "n4"]

    asyncio.run(go())


def test_stub_streams_sse_chunks(stub: StubServer) -> None:
    stub.set_script({"rules": [{"match": "tools", "toolCalls": [{"name": "f", "arguments": {"a": 1}}]}]})

    async def go() -> tuple[str, list[Any], Any]:
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=stub.url, max_retries=0) as sdk:
            text = ""
            stream = await sdk.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "stream me"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            usage = None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                usage = chunk.usage or usage
            calls: list[Any] = []
            stream = await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "tools"}], stream=True
            )
            async for chunk in stream:
                calls += chunk.choices[0].delta.tool_calls or [] if chunk.choices else []
            return text, calls, usage

    text, calls, usage = asyncio.run(go())
    assert text == "Echo: stream me"
    assert usage is not None
    assert usage.completion_tokens == 3
    assert [(c.function.name, c.function.arguments) for c in calls] == [("f", '{"a": 1}')]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ({"rulez": []}, r"unknown keys \['rulez'\]"),
        ({"rules": [{"match": "("}]}, r"rules\[0\]: missing \)"),
        ({"rules": [{"toolCalls": [{"arguments": {}}]}]}, r"rules\[0\].toolCalls\[0\]"),
        ({"rules": [{"delay": 5}]}, r"rules\[0\]: unknown keys \['delay'\]"),
    ],
)
def test_bad_scripts_name_the_field(script: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_script(script)


def test_script_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text("rules:\n  - match: hi\n    when: first\n    times: 1\n    content: hello\n")
    (rule,) = load_script(path).rules
    assert (rule.when, rule.times, rule.content) == ("first", 1, "hello")
    assert rule.match is not None
    assert rule.match.pattern == "hi"


# --- the stub as a process ---------------------------------------------------------------------


def stub_process(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "gitops_acp.testing.llm_stub", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_stub_process_prints_its_url_and_stops_after_max_seconds(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"content": "from a file"}]}))
    proc = stub_process("--max-seconds", "1.5", "--script", str(script))
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v1")
        cfg = LLMConfig(provider="openai", model="m", api_key=API_KEY, base_url=url)
        assert complete(cfg, user("x")).content == "from a file"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_stub_process_names_a_bad_script_and_exits_2(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("rules:\n  - when: sometimes\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "gitops_acp.testing.llm_stub", "--port", "0", "--script", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        f"error: --script {script}: script: rules[0].when: 'sometimes' is not one of first, tool, any\n"
    )


def test_stub_process_stops_when_its_parent_dies() -> None:
    # A parent that starts the stub, waits for its URL, prints the stub's pid and dies.
    parent = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'gitops_acp.testing.llm_stub', '--port', '0',"
        " '--max-seconds', '60'], stdout=subprocess.PIPE, text=True)\n"
        "p.stdout.readline()\n"
        "print(p.pid, flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, env=env, timeout=30)
    pid = int(out.stdout.strip())

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        psutil.Process(pid).kill()
        pytest.fail("the stub outlived its parent")


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "base_url"),
    [
        ("openai", "gpt-4o", None),
        ("anthropic", "claude-sonnet-4-5", "https://api.anthropic.com/v1/"),
        ("google", "gemini-2.5-flash", "https://generativelanguage.googleapis.com/v1beta/openai/"),
        ("mistral", "mistral-large-latest", "https://api.mistral.ai/v1"),
        ("OpenAI", "gpt-4o", None),
    ],
)
def test_provider_defaults(provider: str, model: str, base_url: str | None) -> None:
    cfg = LLMConfig(provider=provider, model=None, api_key="k", base_url=None)
    assert (cfg.provider, cfg.model, cfg.base_url) == (provider.lower(), model, base_url)


def test_explicit_model_and_base_url_win() -> None:
    cfg = LLMConfig(provider="anthropic", model="claude-x", api_key="k", base_url="http://proxy/v1")
    assert (cfg.model, cfg.base_url) == ("claude-x", "http://proxy/v1")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"provider": "vertex", "model": "gemini-2.5-pro"}, "vertex needs parameters.baseUrl"),
        ({"provider": "vertex", "base_url": "https://x/openapi"}, "no default model"),
        ({"provider": "cohere"}, "unknown provider 'cohere'"),
        ({"api_key": ""}, "API key is empty"),
        ({"api_type": "AZURE"}, "needs parameters.baseUrl"),
        ({"api_type": "AZURE", "base_url": "https://x.openai.azure.com"}, "needs openai.apiVersion"),
        ({"api_type": "VERTEX"}, "expected one of OPEN_AI, AZURE, AZURE_AD"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_config_errors(overrides: dict[str, Any], error: str) -> None:
    values: dict[str, Any] = {"provider": "openai", "model": None, "api_key": "k", "base_url": None}
    values.update(overrides)
    with pytest.raises(LLMConfigError, match=error):
        LLMConfig(**values)


def test_vertex_with_base_url_and_model() -> None:
    cfg = LLMConfig(
        provider="vertex", model="google/gemini-2.5-pro", api_key="k", base_url="https://x/openapi"
    )
    assert cfg.base_url == "https://x/openapi"


def test_package_exports() -> None:
    assert set(llm.__all__) == {
        "DEFAULT_BASE_URLS",
        "DEFAULT_MODELS",
        "PROVIDERS",
        "Completion",
        "LLMClient",
        "LLMConfig",
        "LLMConfigError",
        "OpenAIClient",
        "ToolCallRequest",
        "ToolSpec",
        "validate",
    }
    assert llm.OpenAIClient is OpenAIClient
    client: llm.LLMClient = OpenAIClient()  # the real client satisfies the Protocol
    assert "OpenAIClient" in repr(client)


def test_stub_package_exports() -> None:
    assert set(llm_stub.__all__) == {"Rule", "Script", "StubServer", "StubState", "create_app", "load_script"}
    assert all(hasattr(llm_stub, name) for name in llm_stub.__all__)
    for module in (llm_stub.app, llm_stub.replies, llm_stub.script, llm_stub.servers, llm_stub.validation):
        assert module.__all__, module.__name__
        assert all(hasattr(module, name) for name in module.__all__), module.__name__

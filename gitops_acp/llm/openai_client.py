"""The real LLMClient: chat completions through the openai SDK against any OpenAI-compatible server.

This is the one place the program talks to an LLM (and, with ``stub``, the only place that imports
openai; a ruff rule keeps it so). It fixes the two things ACP got wrong at run time:

- every parameter of the LLM resource reaches every real call (ACP applied temperature, max
  tokens, penalties and the OpenAI options only to its validation call); ``topK``, which OpenAI
  lacks but vLLM, llama.cpp and Ollama accept, goes in the request body as ``top_k``;
- errors are classified by HTTP status into ``TemporaryLLMError`` (408, 409, 429, 5xx, timeouts,
  connection errors: the reconciler backs off and retries) and ``PermanentLLMError`` (any other
  4xx: the task fails with the provider's message), where ACP retried a bad key forever.

The SDK's own retries are off (``max_retries=0``): the reconciler owns retries and records each
attempt in the task's status, so one ``complete()`` is exactly one HTTP request.

The request goes through the SDK's documented generic ``post("/chat/completions", cast_to=object)``
rather than ``chat.completions.create()``: same client, auth headers, Azure deployment routing,
timeouts and exception classes, but ``create()`` walks every message and tool schema through its
TypedDict transform and builds pydantic models for the reply. Measured with openai 3.54 on a
12-message, 10-tool request: 10.6 ms of CPU per call against 2.3 ms, i.e. under 100 calls/s per
core instead of ~400, which the thousands-of-tasks target cannot afford. The reply is checked here
instead (``_completion``), and the assistant message kept is what
``ChatCompletionMessage.model_dump(exclude_none=True)`` would give.

Plain-``http://`` OpenAI-type endpoints with no proxy configured (in-cluster vLLM, Ollama,
llama.cpp, the stub) skip the SDK's request machinery too: the same JSON body goes out over the
keep-alive pool of ``llm/transport.py`` with the headers the SDK would send (bearer key,
organization), and the answer goes through the same checks and the same error classification.
That is 0.14 ms of CPU per request instead of 2.2 ms (measured numbers in transport.py), which is
what lets one process run hundreds of tasks a second against a local model. TLS, proxies, Azure
and anything else stay on the SDK; the tests run every case through both paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import http
import json
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from gitops_acp import __version__, retry
from gitops_acp.errors import LLMError, PermanentLLMError, TemporaryLLMError
from gitops_acp.llm import client
from gitops_acp.llm.client import Completion, LLMConfig, ToolCallRequest, ToolSpec
from gitops_acp.llm.transport import HTTPPool, TransportError

__all__ = ["OpenAIClient"]

_USER_AGENT = f"gitops-acp/{__version__} (direct; openai-python {openai.__version__} wire format)"

# Statuses worth retrying; every other 4xx is the request's fault and will fail again.
_TEMPORARY_STATUSES = frozenset({408, 409, 429})
_MAX_PROVIDER_MESSAGE = 1000


class OpenAIClient:
    """LLMClient over `openai.AsyncOpenAI`, one SDK client (and connection pool) per endpoint and key."""

    def __init__(self, *, max_concurrent_requests: int = 128, direct_http: bool = True) -> None:
        # Keyed by a digest of (endpoint, key, org, api type, version): the key itself is never a dict key.
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        # In-flight requests per endpoint (`serve --llm-concurrency`). Thousands of tasks may be
        # ReadyForLLM at once, and httpcore's pool bookkeeping costs CPU per request in proportion to
        # the requests in flight. Against a local stub answering at once, 16 was fastest (1000 tasks:
        # ~150 tasks/s against ~130 with 1000 in flight); real providers answer in seconds, where
        # the request rate is low and more in flight means more throughput: hence 128 by default.
        self._max_concurrent = max_concurrent_requests
        self._limits: dict[str | None, asyncio.Semaphore] = {}
        # Plain-http endpoints without a proxy skip the SDK (see the module docstring); False sends
        # everything through the SDK (the tests run both ways).
        self._direct_http = direct_http
        self._pool = HTTPPool()
        self._direct: dict[tuple[str | None, str | None], _Direct | None] = {}
        self._tools_cache: dict[int, tuple[Sequence[ToolSpec], bytes]] = {}

    def __repr__(self) -> str:
        return f"OpenAIClient(clients={len(self._clients)})"

    async def complete(
        self, config: LLMConfig, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Completion:
        """Return the next assistant turn; raise TemporaryLLMError or PermanentLLMError on failure."""
        return await self._complete(config, client.to_openai_messages(messages), tools)

    async def validate(self, config: LLMConfig) -> None:
        """Check the key and model with a real 1-token completion, with the config's other parameters."""
        await client.validate(self, config)

    async def aclose(self) -> None:
        """Close every cached SDK client and its connections."""
        clients, self._clients = list(self._clients.values()), {}
        for sdk_client in clients:
            await sdk_client.close()
        await self._pool.aclose()

    async def _complete(
        self, config: LLMConfig, messages: list[dict[str, Any]], tools: Sequence[ToolSpec]
    ) -> Completion:
        body: dict[str, Any] = {"model": config.effective_model, "messages": messages}
        # Only what the resource sets is sent: a server's own defaults apply to the rest.
        for name in ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty", "top_k"):
            value = getattr(config, name)
            if value is not None:
                body[name] = value
        limit = self._limits.get(config.base_url)
        if limit is None:
            limit = self._limits[config.base_url] = asyncio.Semaphore(self._max_concurrent)
        direct = self._direct_for(config)
        async with limit:
            if direct is not None:
                response = await self._post_direct(direct, config, body, tools)
            else:
                if tools:
                    body["tools"] = _tool_list(tools)
                    body["tool_choice"] = "auto"
                response = await self._post_sdk(config, body)
        return _completion(response, config)

    def _direct_for(self, config: LLMConfig) -> _Direct | None:
        if not self._direct_http:
            return None
        key = (config.base_url, config.api_type)
        if key not in self._direct:
            self._direct[key] = _direct_endpoint(config)
        return self._direct[key]

    async def _post_sdk(self, config: LLMConfig, body: dict[str, Any]) -> object:
        sdk_client = self._client_for(config)
        try:
            return await sdk_client.post(
                "/chat/completions", body=body, cast_to=object, options={"timeout": config.timeout}
            )
        except openai.APIStatusError as exc:
            raise _status_error(exc.status_code, exc.body, exc.response.headers, config) from None
        except openai.APITimeoutError:
            raise _timed_out(config) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise _unreachable(config, str(cause) or type(cause).__name__) from None
        except openai.APIError as exc:  # a body the SDK could not make sense of
            detail = _redact(str(exc), config.api_key)
            raise TemporaryLLMError(
                f"LLM request failed: invalid response from {_endpoint(config)}: {detail}"
            ) from None

    async def _post_direct(
        self, endpoint: _Direct, config: LLMConfig, body: dict[str, Any], tools: Sequence[ToolSpec]
    ) -> object:
        """POST the body as the SDK would, over the lean pool; return what the SDK's post() returns."""
        data = json.dumps(body, separators=(",", ":")).encode()
        if tools:  # the same JSON as body["tools"], "tool_choice": "auto" would give
            data = data[:-1] + b',"tools":' + self._tools_json(tools) + b',"tool_choice":"auto"}'
        headers = [
            f"POST {endpoint.path} HTTP/1.1",
            f"Host: {endpoint.netloc}",
            "Accept: application/json",
            "Content-Type: application/json",
            f"User-Agent: {_USER_AGENT}",
            f"Authorization: Bearer {config.api_key}",
            f"Content-Length: {len(data)}",
        ]
        if config.organization:
            headers.append(f"OpenAI-Organization: {config.organization}")
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        try:
            async with asyncio.timeout(config.timeout):
                reply = await self._pool.request(endpoint.host, endpoint.port, head, data)
        except TimeoutError:
            raise _timed_out(config) from None
        except TransportError as exc:
            raise _unreachable(config, str(exc)) from None
        text = reply.body.decode("utf-8", errors="replace")
        is_json = "json" in reply.headers.get("content-type", "")
        if reply.status >= 400:
            # As the SDK: the body's JSON (its "error" object when there is one), else its text.
            error_body: object = text.strip()
            with contextlib.suppress(ValueError):
                error_body = json.loads(text)
            if isinstance(error_body, dict):
                error_body = error_body.get("error", error_body)
            raise _status_error(reply.status, error_body, reply.headers, config)
        if not is_json:
            return text  # as the SDK with cast_to=object: the text, which `_completion` refuses
        try:
            return json.loads(text)
        except ValueError as exc:
            raise TemporaryLLMError(
                f"LLM request failed: invalid response from {_endpoint(config)}: not JSON ({exc})"
            ) from None

    def _tools_json(self, tools: Sequence[ToolSpec]) -> bytes:
        """The tools as JSON, kept per tools sequence: an agent's catalog is the same object each turn.

        A dozen MCP tools are ~5 KB of schemas; encoding them twice a task was 4% of the CPU.
        """
        cached = self._tools_cache.get(id(tools))
        if cached is not None and cached[0] is tools:
            return cached[1]
        if len(self._tools_cache) >= 64:
            self._tools_cache.clear()
        encoded = json.dumps(_tool_list(tools), separators=(",", ":")).encode()
        self._tools_cache[id(tools)] = (tools, encoded)  # holding `tools` keeps its id from being reused
        return encoded

    def _client_for(self, config: LLMConfig) -> openai.AsyncOpenAI:
        """Return the cached SDK client for this endpoint and key, creating it on first use."""
        identity = json.dumps(
            [config.base_url, config.api_key, config.organization, config.api_type, config.api_version]
        )
        cache_key = hashlib.sha256(identity.encode()).hexdigest()
        cached = self._clients.get(cache_key)
        if cached is not None:
            return cached
        sdk_client: openai.AsyncOpenAI
        if config.api_type in ("AZURE", "AZURE_AD"):
            assert config.base_url is not None  # LLMConfig enforces it
            # AZURE_AD: the secret holds an Entra ID token, sent as a bearer token instead of api-key.
            ad_token = config.api_type == "AZURE_AD"
            sdk_client = openai.AsyncAzureOpenAI(
                azure_endpoint=config.base_url,
                api_version=config.api_version,
                api_key=None if ad_token else config.api_key,
                azure_ad_token=config.api_key if ad_token else None,
                organization=config.organization,
                timeout=config.timeout,
                max_retries=0,
            )
        else:
            sdk_client = openai.AsyncOpenAI(
                api_key=config.api_key,
                base_url=config.base_url,
                organization=config.organization,
                timeout=config.timeout,
                max_retries=0,
            )
        self._clients[cache_key] = sdk_client
        return sdk_client


def _completion(response: object, config: LLMConfig) -> Completion:
    """Turn a chat.completion body into a Completion; a reply without a usable choice is temporary."""
    if not isinstance(response, dict):
        raise _invalid(config, f"expected a JSON object, got {type(response).__name__}")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        error = response.get("error")  # some proxies answer 200 with an error body
        if isinstance(error, dict) and error.get("message"):
            raise _invalid(config, _redact(_shorten(str(error["message"])), config.api_key))
        raise _invalid(config, "no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _invalid(config, "a choice without a message")
    # What `ChatCompletionMessage.model_dump(exclude_none=True)` gives, without building the model.
    dumped = {k: v for k, v in message.items() if v is not None}
    content = dumped.get("content")
    if isinstance(content, list):  # content parts, as a few servers answer
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is not None and not isinstance(content, str):
        raise _invalid(config, "message content is not text")
    if content is None and isinstance(dumped.get("refusal"), str):
        content = dumped["refusal"]  # the model's answer, in place of content
    if content is not None:
        dumped["content"] = content
    calls: list[ToolCallRequest] = []
    for call in dumped.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not function.get("name") or not call.get("id"):
            # a custom (non-function) tool call, which we never offer, or a malformed one
            raise _invalid(config, f"unsupported tool call {_shorten(json.dumps(call))}")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # a few servers send an object instead of JSON text
            arguments = json.dumps(arguments) if arguments is not None else ""
            function["arguments"] = arguments
        calls.append(ToolCallRequest(id=str(call["id"]), name=str(function["name"]), arguments=arguments))
    usage = response.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    finish_reason = choice.get("finish_reason")
    return Completion(
        content=content,
        tool_calls=tuple(calls),
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        message=client.assistant_message(dumped),
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
    )


def _invalid(config: LLMConfig, what: str) -> TemporaryLLMError:
    return TemporaryLLMError(
        f"LLM returned an invalid response ({_endpoint(config)}, model {config.model}): {what}"
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tool_list(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def _status_error(status: int, body: object, headers: Mapping[str, str], config: LLMConfig) -> LLMError:
    """Classify an HTTP error reply by status, carrying the provider's own message."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "HTTP error"
    detail = _redact(_provider_message(body), config.api_key)
    text = (
        f"LLM request failed: {status} {reason}: {detail}"
        if detail
        else f"LLM request failed: {status} {reason}"
    )
    if status in _TEMPORARY_STATUSES or status >= 500:
        return TemporaryLLMError(text, status_code=status, retry_after=retry.retry_after(headers))
    return PermanentLLMError(text, status_code=status)


def _provider_message(body: object) -> str:
    """Return `error.message` from the JSON body when there is one, else the body text, shortened.

    `body` is what the SDK makes of an error reply: the JSON's "error" object, the JSON, or the text.
    """
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return _shorten(message)
        if isinstance(body.get("error"), str):  # {"error": "text"}, as some proxies answer
            return _shorten(body["error"])
        return _shorten(json.dumps(body))
    if isinstance(body, str):
        return _shorten(body)
    return ""


def _timed_out(config: LLMConfig) -> TemporaryLLMError:
    return TemporaryLLMError(f"LLM request timed out after {config.timeout:g}s ({_endpoint(config)})")


def _unreachable(config: LLMConfig, cause: str) -> TemporaryLLMError:
    detail = _redact(cause, config.api_key)
    return TemporaryLLMError(f"LLM request failed: cannot reach {_endpoint(config)}: {detail}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Direct:
    """Where a direct request goes: the connection and the request target."""

    host: str
    port: int
    netloc: str
    path: str


def _direct_endpoint(config: LLMConfig) -> _Direct | None:
    """The endpoint for the direct path, or None when the request must go through the SDK."""
    if config.api_type not in (None, "OPENAI") or not config.base_url:
        return None
    url = urllib.parse.urlsplit(config.base_url)
    if url.scheme != "http" or not url.hostname or urllib.request.getproxies().get("http"):
        return None
    path = url.path.rstrip("/") + "/chat/completions" + (f"?{url.query}" if url.query else "")
    try:
        port = url.port or 80
    except ValueError:
        return None  # let the SDK report the malformed URL
    return _Direct(host=url.hostname, port=port, netloc=url.netloc.rpartition("@")[2], path=path)


def _endpoint(config: LLMConfig) -> str:
    return config.base_url or "the OpenAI API"


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_PROVIDER_MESSAGE else text[: _MAX_PROVIDER_MESSAGE - 3] + "..."


def _redact(text: str, secret: str) -> str:
    """Remove the API key from text a server or library produced (some proxies echo it back)."""
    return text.replace(secret, "***") if secret else text

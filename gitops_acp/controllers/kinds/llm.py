"""LLM controller: resolve the API key, validate the endpoint with a real request, report Ready/Error.

Steps, in order: resolve the secret, build the client configuration, validate with ACP's 1-token
request. Unlike ACP, nothing is sticky: an LLM in Error is validated again after a while and at once
when its file changes; a Ready LLM is validated again when its file or its secret changes (a
rotated key is noticed by fingerprint, kept in memory only, never in status).

Reasons (the `statusDetail` texts) are stable: tests and users read them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace

from gitops_acp.controllers.base import Context, Key, Result, forget
from gitops_acp.errors import LLMError, SecretError
from gitops_acp.llm.client import LLMConfig
from gitops_acp.resources.meta import Condition, Kind
from gitops_acp.resources.models import LLM, AnyResource, LLMStatus
from gitops_acp.secrets import SecretResolver
from gitops_acp.telemetry import tracing

__all__ = ["LLMController", "llm_config"]


def llm_config(llm: LLM, secrets: SecretResolver, *, timeout: float) -> LLMConfig:
    """Build the client configuration of an LLM resource; raises SecretError if the key is missing."""
    spec = llm.spec
    owner = f'LLM "{llm.metadata.name}"'
    if spec.api_key_from is None:
        raise SecretError(f"{owner}: spec.apiKeyFrom is required (a secretKeyRef to the API key)")
    ref = spec.api_key_from.secret_key_ref
    api_key = secrets.resolve(ref.name, ref.key, owner=owner)
    if not api_key:
        raise SecretError(f'{owner}: secret "{ref.name}" key {ref.key} is empty')
    params = spec.parameters
    openai = spec.openai
    return LLMConfig(
        provider=str(spec.provider),
        model=params.model if params else None,
        api_key=api_key,
        base_url=params.base_url if params else None,
        temperature=params.temperature if params else None,
        max_tokens=params.max_tokens if params else None,
        top_p=params.top_p if params else None,
        top_k=params.top_k if params else None,
        frequency_penalty=params.frequency_penalty if params else None,
        presence_penalty=params.presence_penalty if params else None,
        organization=openai.organization if openai else None,
        api_type=str(openai.api_type) if openai and openai.api_type else None,
        api_version=openai.api_version if openai else None,
        timeout=timeout,
    )


class LLMController:
    """Validates LLM resources; re-validates on spec or secret change; never sticks in Error."""

    kind = Kind.LLM

    def __init__(self) -> None:
        # name -> (spec digest, secret fingerprint) of the last successful validation, in memory only.
        self._validated: dict[str, tuple[str, str | None]] = {}

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        return ()

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.state.desired(Kind.LLM, name)
        if loaded is None:
            self._validated.pop(name, None)
            return await forget(Kind.LLM, name, ctx)
        assert isinstance(loaded.resource, LLM)
        llm = loaded.resource
        observed = ctx.state.observed(Kind.LLM, name)
        current = observed.status if isinstance(observed, LLM) and observed.status else LLMStatus()

        spec_digest = hashlib.sha256(llm.spec.model_dump_json().encode()).hexdigest()
        ref = llm.spec.api_key_from.secret_key_ref if llm.spec.api_key_from else None
        fingerprint = ctx.secrets.fingerprint(ref.name, ref.key) if ref else None
        if current.status == Condition.Ready and self._validated.get(name) == (spec_digest, fingerprint):
            return Result(ctx.settings.revalidate_interval, progress=False)

        status, retry = await self._validate(llm, ctx)
        if status.status == Condition.Ready:
            self._validated[name] = (spec_digest, fingerprint)
        else:
            self._validated.pop(name, None)
        await ctx.state.checkpoint(llm.model_copy(update={"status": status}))
        return retry

    async def _validate(self, llm: LLM, ctx: Context) -> tuple[LLMStatus, Result]:
        try:
            config = llm_config(llm, ctx.secrets, timeout=ctx.settings.llm_timeout)
        except (SecretError, ValueError) as exc:  # ValueError: LLMConfigError, e.g. vertex without baseUrl
            return _error(str(exc)), Result(ctx.settings.error_retry, progress=False)
        try:
            with tracing.LLMCall(llm.metadata.name, config) as call:
                probe = replace(config, max_tokens=1)
                call.answered(await ctx.llm.complete(probe, [{"role": "user", "content": "test"}]))
        except LLMError as exc:
            return _error(f"validation request failed: {exc}"), Result(
                ctx.settings.error_retry, progress=False
            )
        detail = f"{llm.spec.provider} provider validated successfully"
        return (
            LLMStatus(ready=True, status=Condition.Ready, status_detail=detail),
            Result(ctx.settings.revalidate_interval, progress=False),
        )


def _error(detail: str) -> LLMStatus:
    return LLMStatus(ready=False, status=Condition.Error, status_detail=detail)

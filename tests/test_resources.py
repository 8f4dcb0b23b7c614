"""The resource schema and loader: ACP manifests load unchanged, and every mistake is `file:line: message`."""

from __future__ import annotations

import collections
import hashlib
import importlib
import textwrap
from pathlib import Path

import pytest
import yaml

from gitops_acp.errors import ResourceError, UserError
from gitops_acp.resources import loader, meta, models
from gitops_acp.resources.meta import Kind


def load(text: str, path: str = "r.yaml") -> loader.FileResult:
    """Load one file from dedented text."""
    return loader.load_file(path, textwrap.dedent(text).lstrip("\n").encode())


def only(result: loader.FileResult) -> models.AnyResource:
    """Return the single resource of a file that must have loaded cleanly."""
    assert result.errors == (), [str(e) for e in result.errors]
    assert len(result.loaded) == 1
    return result.loaded[0].resource


def messages(result: loader.FileResult | loader.LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


# ----------------------------------------------------------------------------- ACP manifests


# The getting-started manifests of the KubeChain README, verbatim (Task still says `message`).
KUBECHAIN_GETTING_STARTED = """\
apiVersion: kubechain.humanlayer.dev/v1alpha1
kind: LLM
metadata:
  name: gpt-4o
spec:
  provider: openai
  apiKeyFrom:
    secretKeyRef:
      name: openai
      key: OPENAI_API_KEY
---
apiVersion: kubechain.humanlayer.dev/v1alpha1
kind: Agent
metadata:
  name: my-assistant
spec:
  llmRef:
    name: gpt-4o
  system: |
    You are a helpful assistant. Your job is to help the user with their tasks.
---
apiVersion: kubechain.humanlayer.dev/v1alpha1
kind: Task
metadata:
  name: hello-world-task
spec:
  agentRef:
    name: my-assistant
  message: "What is the capital of the moon?"
---
apiVersion: kubechain.humanlayer.dev/v1alpha1
kind: MCPServer
metadata:
  name: fetch
spec:
  transport: "stdio"
  command: "uvx"
  args: ["mcp-server-fetch"]
"""


def test_kubechain_getting_started_manifests_load_unchanged() -> None:
    result = loader.load_file("getting-started.yaml", KUBECHAIN_GETTING_STARTED.encode())
    assert result.errors == ()
    by_kind = {item.resource.kind: item for item in result.loaded}
    assert [item.line for item in result.loaded] == [1, 12, 22, 31]

    llm = by_kind["LLM"].resource
    assert isinstance(llm, models.LLM)
    assert llm.spec.provider is models.Provider.OPENAI
    assert llm.spec.api_key_from is not None
    assert llm.spec.api_key_from.secret_key_ref == models.SecretKeyRef(name="openai", key="OPENAI_API_KEY")

    agent = by_kind["Agent"].resource
    assert isinstance(agent, models.Agent)
    assert agent.spec.llm_ref.name == "gpt-4o"
    assert agent.spec.system.startswith("You are a helpful assistant.")

    task = by_kind["Task"].resource
    assert isinstance(task, models.Task)
    assert task.spec.user_message == "What is the capital of the moon?"
    assert task.api_version == meta.API_VERSION  # normalized: status files carry ours

    server = by_kind["MCPServer"].resource
    assert isinstance(server, models.MCPServer)
    assert server.spec.transport is models.Transport.STDIO
    assert (server.spec.command, server.spec.args) == ("uvx", ["mcp-server-fetch"])


@pytest.mark.parametrize("api_version", sorted(meta.ACCEPTED_API_VERSIONS))
def test_every_accepted_api_version_loads(api_version: str) -> None:
    resource = only(
        load(
            f"""
            apiVersion: {api_version}
            kind: Agent
            metadata: {{name: a}}
            spec: {{llmRef: {{name: l}}, system: be brief}}
            """
        )
    )
    assert resource.api_version == meta.API_VERSION


def test_message_is_the_old_name_of_user_message_only_for_kubechain() -> None:
    result = load(
        """
        apiVersion: acp.humanlayer.dev/v1alpha1
        kind: Task
        metadata: {name: t}
        spec:
          agentRef: {name: a}
          message: hi
        """
    )
    assert messages(result) == [
        'r.yaml:6: Task "t": spec.message: unknown field, did you mean userMessage? (allowed: agentRef, '
        "baseURL, channelTokenFrom, contactChannelRef, contextWindow, followUps, forkFrom, responseUrl, "
        "threadID, "
        "ttlSecondsAfterFinished, userMessage)",
    ]


def test_acp_llm_with_string_parameters_and_provider_blocks() -> None:
    llm = only(
        load(
            """
            apiVersion: acp.humanlayer.dev/v1alpha1
            kind: LLM
            metadata: {name: claude, namespace: default}
            spec:
              provider: anthropic
              apiKeyFrom: {secretKeyRef: {name: anthropic, key: ANTHROPIC_API_KEY}}
              parameters:
                model: claude-3-5-sonnet-latest
                baseUrl: https://api.anthropic.com/v1/
                temperature: "0.7"
                topP: "0.9"
                topK: 40
                maxTokens: 1024
                frequencyPenalty: "-0.5"
                presencePenalty: 1
              openai: {organization: org-1, apiType: AZURE, apiVersion: "2024-02-01"}
              anthropic: {anthropicBetaHeader: tools-2024-04-04}
              vertex: {cloudProject: p, cloudLocation: us-central1}
              mistral: {maxRetries: 0, timeout: 30, randomSeed: 7}
              google: {cloudProject: p}
            """
        )
    )
    assert isinstance(llm, models.LLM)
    params = llm.spec.parameters
    assert (params.temperature, params.top_p, params.frequency_penalty) == (0.7, 0.9, -0.5)
    assert (params.top_k, params.max_tokens, params.presence_penalty) == (40, 1024, 1.0)
    assert llm.spec.openai is not None
    assert llm.spec.openai.api_type is models.ApiType.AZURE
    assert models.OpenAIOptions().api_type is models.ApiType.OPEN_AI


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("temperature", '"2.5"', "spec.parameters.temperature: must be at most 2"),
        ("topP", "-0.1", "spec.parameters.topP: must be at least 0"),
        ("presencePenalty", '"3"', "spec.parameters.presencePenalty: must be at most 2"),
        ("temperature", "hot", "spec.parameters.temperature: must be a number"),
        ("temperature", "true", "spec.parameters.temperature: must be a number, not true/false"),
        ("maxTokens", "0", "spec.parameters.maxTokens: must be at least 1"),
        ("topK", "1.5", "spec.parameters.topK: must be a whole number"),
    ],
)
def test_llm_parameters_are_range_checked(field: str, value: str, expected: str) -> None:
    result = load(
        f"""
        apiVersion: acp.gitops.dev/v1alpha1
        kind: LLM
        metadata: {{name: m}}
        spec:
          provider: openai
          parameters:
            {field}: {value}
        """
    )
    assert messages(result) == [f'r.yaml:7: LLM "m": {expected}']
    assert result.keys_in_error == {(Kind.LLM, "m")}


# ----------------------------------------------------------------------------- files and lines


def test_multi_document_file_with_foreign_documents() -> None:
    result = load(
        """
        # a CI config or a Kubernetes manifest may share the file: ignored
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec: {replicas: 2}
        ---
        apiVersion: acp.gitops.dev/v1alpha1
        kind: LLM
        metadata: {name: m}
        spec: {provider: openai}
        ---
        ---
        - just a list
        ---
        apiVersion: acp.gitops.dev/v1alpha1
        kind: ContactChannel
        metadata: {name: reviewers}
        spec: {}
        """
    )
    assert result.errors == ()
    assert [(i.resource.kind, i.resource.metadata.name, i.line) for i in result.loaded] == [
        ("LLM", "m", 7),
        ("ContactChannel", "reviewers", 15),
    ]
    channel = result.loaded[1].resource
    assert isinstance(channel, models.ContactChannel)
    assert channel.spec.type is models.ChannelType.GIT  # ours is the default


@pytest.mark.parametrize(
    "text",
    [
        "on: push\njobs: {build: {runs-on: ubuntu-latest}}\n",  # a GitHub workflow
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n",
        "just a string\n",
        "",
    ],
)
def test_foreign_documents_are_ignored(text: str) -> None:
    result = loader.load_file("other.yaml", text.encode())
    assert result == loader.FileResult("other.yaml")


def test_unknown_field_reports_its_line_and_camel_case_path() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: MCPServer
        metadata:
          name: fetch
        spec:
          transport: stdio
          command: uvx
          env:
            - name: LOG_LEVEL
              value: debug
            - name: PROXY
              valueFrm:
                secretKeyRef: {name: proxy, key: URL}
        """
    )
    assert messages(result) == [
        'r.yaml:12: MCPServer "fetch": spec.env[1].valueFrm: unknown field, did you mean valueFrom? '
        "(allowed: name, value, valueFrom)"
    ]


def test_unknown_top_level_spec_field_lists_allowed_fields() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata: {name: a}
        spec:
          llmRef: {name: l}
          system: hi
          tools: [{name: x}]
        """
    )
    assert messages(result) == [
        'r.yaml:7: Agent "a": spec.tools: unknown field (allowed: description, humanContactChannels, '
        "limits, llmRef, mcpServers, subAgents, system)"
    ]


def test_missing_field_is_reported_on_its_parent_line() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Task
        metadata: {name: hello}

        spec:
          userMessage: hi
        """
    )
    assert messages(result) == ['r.yaml:5: Task "hello": spec.agentRef: field required']


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Pipeline", "unknown kind 'Pipeline': use one of LLM, Agent, MCPServer, ContactChannel, Task"),
        ("agent", "unknown kind 'agent' (did you mean Agent?)"),
        ("TaskRun", "kind TaskRun was merged into Task in ACP v0.2.0: use kind Task"),
        ("TaskRunToolCall", "kind TaskRunToolCall was renamed ToolCall in ACP v0.5.0"),
        ("Tool", "kind Tool was removed in ACP v0.5.0: an Agent's tools come from its mcpServers"),
    ],
)
def test_unknown_and_retired_kinds(kind: str, expected: str) -> None:
    result = load(
        f"""
        apiVersion: acp.humanlayer.dev/v1alpha1
        metadata: {{name: x}}
        kind: {kind}
        spec: {{}}
        """
    )
    assert len(result.errors) == 1
    assert result.errors[0].line == 3
    assert expected in str(result.errors[0])
    assert result.loaded == ()


def test_other_version_of_our_group_is_an_error() -> None:
    result = load(
        """
        apiVersion: acp.humanlayer.dev/v1beta1
        kind: Task
        metadata: {name: t}
        """
    )
    assert messages(result) == [
        'r.yaml:1: Task "t": apiVersion acp.humanlayer.dev/v1beta1 is not supported: use one of '
        "acp.gitops.dev/v1alpha1, acp.humanlayer.dev/v1alpha1, kubechain.humanlayer.dev/v1alpha1"
    ]
    assert result.keys_in_error == {(Kind.Task, "t")}


@pytest.mark.parametrize(
    "name",
    ["My-Task", "my_task", "-task", "task-", "a" * 64, "tâche"],
)
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    result = load(
        f"""
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Task
        metadata:
          name: "{name}"
        spec: {{agentRef: {{name: a}}, userMessage: hi}}
        """
    )
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.line == 4
    assert "metadata.name" in str(error)
    assert "63" in str(error)
    assert result.keys_in_error == {(Kind.Task, name)}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("a" * 63, True),
        ("web-1", True),
        ("1a", True),
        ("a" * 64, False),
        ("A", False),
        ("", False),
    ],
)
def test_check_name(name: str, ok: bool) -> None:
    assert (meta.check_name(name) is None) is ok


def test_metadata_filled_in_by_kubernetes_is_dropped() -> None:
    agent = only(
        load(
            """
            apiVersion: acp.humanlayer.dev/v1alpha1
            kind: Agent
            metadata:
              name: a
              namespace: default
              uid: 0f6c7f9e-8b1a-4d0c-9c7e-2a1b3c4d5e6f
              resourceVersion: "12345"
              generation: 2
              creationTimestamp: "2025-06-01T10:00:00Z"
            spec: {llmRef: {name: l}, system: hi}
            """
        )
    )
    assert models.to_document(agent)["metadata"] == {"name": "a", "namespace": "default"}


def test_namespace_other_than_default_is_refused() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata:
          name: a
          namespace: team-a
        spec: {llmRef: {name: l}, system: hi}
        """
    )
    assert len(result.errors) == 1
    assert result.errors[0].line == 5
    assert "one repository is one namespace" in str(result.errors[0])


def test_syntax_error_beside_a_good_file_keeps_the_good_resources() -> None:
    good = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata: {name: a}
        spec: {llmRef: {name: l}, system: hi}
        """,
        path="good.yaml",
    )
    broken = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata: {name: b}
        spec:
          system: "unterminated
          llmRef: {name: l}
        """,
        path="broken.yaml",
    )
    assert broken.broken
    assert len(broken.errors) == 1
    assert str(broken.errors[0]).startswith("broken.yaml:")
    assert "invalid YAML" in str(broken.errors[0])
    assert broken.errors[0].line in (5, 6, 7)

    result = loader.assemble([broken, good])
    assert list(result.resources) == [(Kind.Agent, "a")]
    assert result.broken_paths == {"broken.yaml"}
    assert len(result.errors) == 1


def test_syntax_error_line_is_exact() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata:
          name: x
           bad: here
        """
    )
    assert [e.line for e in result.errors] == [5]


def test_broken_yaml_that_is_not_ours_is_ignored() -> None:
    result = loader.load_file("ci.yml", b"steps: [\n  - run: make\n")
    assert result == loader.FileResult("ci.yml")


def test_non_yaml_paths_are_not_considered() -> None:
    assert loader.load_file("README.md", KUBECHAIN_GETTING_STARTED.encode()) == loader.FileResult("README.md")


def test_yaml_timestamps_stay_text() -> None:
    task = only(
        load(
            """
            apiVersion: acp.gitops.dev/v1alpha1
            kind: Task
            metadata: {name: t}
            spec: {agentRef: {name: a}, userMessage: 2026-11-22}
            """
        )
    )
    assert isinstance(task, models.Task)
    assert task.spec.user_message == "2026-11-22"


def test_yaml_aliases_are_not_expanded_exponentially() -> None:
    lines = ["apiVersion: acp.gitops.dev/v1alpha1", "kind: Agent", "metadata: {name: a}", "x0: &x0 [a, a]"]
    lines += [f"x{i}: &x{i} [*x{i - 1}, *x{i - 1}]" for i in range(1, 40)]
    result = loader.load_file("bomb.yaml", "\n".join(lines).encode())
    assert result.loaded == ()
    assert len(result.errors) >= 1  # unknown fields and a missing spec; and it returned at all


def test_duplicate_yaml_keys_are_errors_but_merge_overrides_are_not() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata: {name: a}
        spec: {llmRef: {name: l}, system: first}
        spec: {llmRef: {name: l}}
        """
    )
    assert messages(result) == [
        'r.yaml:5: Agent "a": spec: duplicate key (first at line 4)',
        'r.yaml:5: Agent "a": spec.system: field required',  # the line of the value YAML kept
    ]
    merged = only(
        load(
            """
            apiVersion: acp.gitops.dev/v1alpha1
            kind: Agent
            metadata: {name: a}
            spec:
              <<: {llmRef: {name: l}, system: shared}
              system: own
            """
        )
    )
    assert isinstance(merged, models.Agent)
    assert merged.spec.system == "own"


def test_hostile_files_are_reported_not_raised() -> None:
    head = "apiVersion: acp.gitops.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
    deep = loader.load_file("deep.yaml", (head + "spec: " + "[" * 5000 + "]" * 5000 + "\n").encode())
    assert [e.line for e in deep.errors] == [4]
    latin1 = loader.load_file("latin1.yaml", (head + "spec: {system: caf\xe9}\n").encode("latin-1"))
    assert latin1.broken
    assert "invalid YAML: not valid text" in str(latin1.errors[0])
    unsafe = loader.load_file("tag.yaml", (head + "spec: !!python/object:os.system {}\n").encode())
    assert unsafe.broken
    assert unsafe.errors[0].line == 4


# ----------------------------------------------------------------------------- duplicates, assembly


def test_duplicate_is_reported_on_both_files() -> None:
    first = load(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: x}\n"
        "spec: {agentRef: {name: a}, userMessage: one}\n",
        path="a.yaml",
    )
    other = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Agent
        metadata: {name: x}
        spec: {llmRef: {name: l}, system: same name but another kind is fine}
        ---
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Task
        metadata: {name: x}
        spec: {agentRef: {name: a}, userMessage: two}
        """,
        path="b.yaml",
    )
    result = loader.assemble([other, first])
    assert messages(result) == [
        'a.yaml:1: duplicate Task "x": also defined at b.yaml:6',
        'b.yaml:6: duplicate Task "x": also defined at a.yaml:1',
    ]
    assert (Kind.Task, "x") in result.keys_in_error
    assert (Kind.Task, "x") not in result.resources
    assert (Kind.Agent, "x") in result.resources


def test_a_name_declared_in_many_files_names_a_few_of_the_others() -> None:
    task = "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: x}\n"
    files = [
        load(task + f"spec: {{agentRef: {{name: a}}, userMessage: m{i}}}\n", path=f"f{i}.yaml")
        for i in range(8)
    ]
    result = loader.assemble(files)
    shown = messages(result)
    assert len(shown) == 8
    assert shown[0] == (
        'f0.yaml:1: duplicate Task "x": also defined at f1.yaml:1, f2.yaml:1, f3.yaml:1, f4.yaml:1, '
        "f5.yaml:1 and 2 more"
    )
    assert shown[7] == (
        'f7.yaml:1: duplicate Task "x": also defined at f0.yaml:1, f1.yaml:1, f2.yaml:1, f3.yaml:1, '
        "f4.yaml:1 and 2 more"
    )
    assert (Kind.Task, "x") not in result.resources


def test_resource_valid_in_one_file_and_invalid_in_another_is_not_loaded() -> None:
    good = load(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: x}\n"
        "spec: {agentRef: {name: a}, userMessage: one}\n",
        path="a.yaml",
    )
    bad = load(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: x}\nspec: {}\n", path="b.yaml"
    )
    result = loader.assemble([good, bad])
    assert result.resources == {}
    assert result.keys_in_error == {(Kind.Task, "x")}


def test_toolcalls_on_main_are_refused() -> None:
    result = loader.assemble(
        [
            load(
                """
                apiVersion: acp.gitops.dev/v1alpha1
                kind: ToolCall
                metadata: {name: t-abc1234-tc-01}
                spec:
                  toolCallId: call_1
                  taskRef: {name: t}
                  toolRef: {name: fetch__fetch}
                  toolType: MCP
                  arguments: "{}"
                """
            )
        ]
    )
    assert result.resources == {}
    assert messages(result) == [
        'r.yaml:1: ToolCall "t-abc1234-tc-01": ToolCalls exist only on the status branch; '
        "the reconciler creates them"
    ]


def test_approval_and_human_response_documents_are_records() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Approval
        metadata: {name: hello-k3x9q2a-tc-01}
        spec: {task: hello, anything: goes, arguments: {token: sk-abcdefghijklmnopqrstuvwxyz}}
        ---
        apiVersion: acp.gitops.dev/v1alpha1
        kind: HumanResponse
        metadata: {name: hello-k3x9q2a-tc-02}
        spec: {response: "42"}
        """,
        path="approvals/x.yaml",
    )
    assert result.errors == ()
    assert [(path, line, doc["kind"]) for path, line, doc in result.records] == [
        ("approvals/x.yaml", 1, "Approval"),
        ("approvals/x.yaml", 6, "HumanResponse"),
    ]
    assert loader.assemble([result]).records == list(result.records)


def test_load_paths_walks_directories(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.yaml").write_text(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
        "spec: {llmRef: {name: l}, system: hi}\n"
    )
    (tmp_path / "llm.yml").write_text(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: LLM\nmetadata: {name: l}\nspec: {}\n"
    )
    (tmp_path / "notes.txt").write_text("apiVersion: acp.gitops.dev/v1alpha1\nkind: Nope\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("apiVersion: acp.gitops.dev/v1alpha1\nkind: Nope\n")

    result = loader.load_paths([tmp_path], root=tmp_path)
    assert set(result.resources) == {(Kind.Agent, "a")}
    assert result.resources[(Kind.Agent, "a")].path == "agents/a.yaml"
    assert messages(result) == ['llm.yml:4: LLM "l": spec.provider: field required']

    single = loader.load_paths([tmp_path / "agents" / "a.yaml"], root=tmp_path)
    assert set(single.resources) == {(Kind.Agent, "a")}
    with pytest.raises(UserError, match="no such file"):
        loader.load_paths([tmp_path / "missing"], root=tmp_path)
    with pytest.raises(UserError, match="not a YAML file"):
        loader.load_paths([tmp_path / "notes.txt"], root=tmp_path)


# ----------------------------------------------------------------------------- secrets


SECRET = "hunter2-very-secret-value"


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        (
            "LLM",
            f"provider: openai\n  apiKey: {SECRET}",
            "literal API keys are refused: use apiKeyFrom.secretKeyRef",
        ),
        ("ContactChannel", f"type: slack\n  token: {SECRET}", "literal API keys are refused"),
        (
            "ContactChannel",
            f"git:\n    token: {SECRET}",
            "literal tokens are refused: use tokenFrom.secretKeyRef",
        ),
        (
            "MCPServer",
            f"transport: stdio\n  command: x\n  env: [{{name: OPENAI_API_KEY, value: {SECRET}}}]",
            "use valueFrom.secretKeyRef",
        ),
        (
            "MCPServer",
            f"transport: http\n  url: http://h/mcp\n  headers: [{{name: Authorization, value: {SECRET}}}]",
            "use valueFrom.secretKeyRef",
        ),
        (
            "MCPServer",
            f"transport: http\n  url: http://h/mcp\n  headers: [{{name: X-Api-Key, value: {SECRET}}}]",
            "use valueFrom.secretKeyRef",
        ),
    ],
)
def test_literal_secrets_are_refused_without_echoing_them(kind: str, spec: str, expected: str) -> None:
    source = f"apiVersion: acp.gitops.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n  {spec}\n"
    result = loader.load_file("r.yaml", source.encode())
    assert result.loaded == ()
    assert len(result.errors) == 1, messages(result)
    text = str(result.errors[0])
    assert expected in text
    assert SECRET not in text
    assert SECRET not in repr(result.errors[0])
    assert result.errors[0].line == next(n for n, line in enumerate(source.splitlines(), 1) if SECRET in line)


@pytest.mark.parametrize(
    "name", ["KEYBOARD_LAYOUT", "GIT_AUTHOR_NAME", "MONKEY", "TOKENIZER_PATH", "LOG_LEVEL"]
)
def test_env_names_that_only_contain_secret_words_are_fine(name: str) -> None:
    assert not models.EnvVar.model_validate({"name": name, "value": "x"}).value_from


@pytest.mark.parametrize(
    "name", ["OPENAI_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "aws_secret", "Authorization", "apiKey", "AUTH"]
)
def test_secret_sounding_env_names_need_value_from(name: str) -> None:
    with pytest.raises(ValueError, match=r"valueFrom\.secretKeyRef"):
        models.EnvVar.model_validate({"name": name, "value": "x"})
    ref = {"secretKeyRef": {"name": "s", "key": "k"}}
    assert models.EnvVar.model_validate({"name": name, "valueFrom": ref}).value is None


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("sk-proj-" + "a1B2" * 8, "OpenAI"),
        ("sk-ant-api03-" + "x" * 30, "Anthropic"),
        ("ghp_" + "A" * 36, "GitHub"),
        ("github_pat_" + "1" * 30, "GitHub"),
        ("glpat-" + "z" * 20, "GitLab"),
        ("xoxb-1234567890-abcdef", "Slack"),
        ("AKIAIOSFODNN7EXAMPLE", "AWS"),
    ],
)
def test_token_shaped_values_are_refused_anywhere_with_their_line(token: str, what: str) -> None:
    result = load(
        f"""
        apiVersion: acp.gitops.dev/v1alpha1
        kind: Task
        metadata: {{name: t}}
        spec:
          agentRef: {{name: a}}
          userMessage: |
            please use this:
            {token}
        """
    )
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.line == 6
    assert "spec.userMessage" in str(error)
    assert what in str(error)
    assert token not in str(error)
    assert result.keys_in_error == {(Kind.Task, "t")}


def test_private_keys_are_refused() -> None:
    result = load(
        """
        apiVersion: acp.gitops.dev/v1alpha1
        kind: MCPServer
        metadata: {name: s}
        spec:
          transport: stdio
          command: ssh
          args: ["-i", "-----BEGIN OPENSSH PRIVATE KEY-----\\nabc\\n-----END OPENSSH PRIVATE KEY-----"]
        """
    )
    assert messages(result) == [
        'r.yaml:7: MCPServer "s": spec.args[1]: looks like a private key; secrets must not be committed: '
        "put them in --secrets-dir (<dir>/<name>/<key>) or the environment, referenced with secretKeyRef"
    ]


@pytest.mark.parametrize(
    "text", ["my-task-aaaaaaaaaaaaaaaaaaaaaaaa", "disk-usage-monitoring-dashboard", "sk-short"]
)
def test_token_patterns_do_not_match_ordinary_words(text: str) -> None:
    only(
        load(
            f"""
            apiVersion: acp.gitops.dev/v1alpha1
            kind: Task
            metadata: {{name: t}}
            spec: {{agentRef: {{name: a}}, userMessage: {text}}}
            """
        )
    )


def test_kubernetes_secrets_are_refused_without_echoing_data() -> None:
    result = load(
        f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: openai}}
        stringData:
          OPENAI_API_KEY: {SECRET}
        """
    )
    assert messages(result) == [
        'r.yaml:1: Secret "openai": secrets must not be committed: put them in --secrets-dir '
        "(<dir>/<name>/<key>) or the environment"
    ]


def test_sops_encrypted_secrets_are_left_alone() -> None:
    result = load(
        """
        apiVersion: v1
        kind: Secret
        metadata: {name: openai}
        data: {OPENAI_API_KEY: "ENC[AES256_GCM,data:abc,type:str]"}
        sops: {version: 3.8.1}
        """
    )
    assert result == loader.FileResult("r.yaml")


def test_pydantic_never_leaks_inputs_into_messages() -> None:
    result = load(
        f"""
        apiVersion: acp.gitops.dev/v1alpha1
        kind: LLM
        metadata: {{name: m}}
        spec:
          provider: {SECRET}
          apiKeyFrom: {SECRET}
        """
    )
    assert len(result.errors) == 2
    assert all(SECRET not in str(e) for e in result.errors)
    assert "spec.provider: must be one of openai, anthropic, mistral, google, vertex" in str(result.errors[0])
    assert "spec.apiKeyFrom: must be a mapping" in str(result.errors[1])


# ----------------------------------------------------------------------------- Task input rules


TASK_HEAD = (
    "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: t}\nspec:\n  agentRef: {name: a}\n"
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "  userMessage: hi\n  contextWindow: [{role: user, content: hi}]\n",
            "only one of userMessage or contextWindow can be provided",
        ),
        ("", "one of userMessage or contextWindow must be provided"),
        ('  userMessage: ""\n', "one of userMessage or contextWindow must be provided"),
        (
            "  contextWindow: [{role: system, content: be brief}]\n",
            "contextWindow must contain at least one user message",
        ),
        ("  contextWindow: [{role: robot, content: hi}]\n", "must be one of system, user, assistant, tool"),
        ("  contextWindow: [{role: user, content: hi}, {role: tool, content: x}]\n", "needs toolCallId"),
    ],
)
def test_task_input_rules(spec: str, expected: str) -> None:
    result = loader.load_file("t.yaml", (TASK_HEAD + spec).encode())
    assert len(result.errors) == 1, messages(result)
    assert expected in str(result.errors[0])


def test_task_with_context_window_and_acp_extras() -> None:
    task = only(
        load(
            """
            apiVersion: acp.humanlayer.dev/v1alpha1
            kind: Task
            metadata: {name: t}
            spec:
              agentRef: {name: a}
              contextWindow:
                - {role: user, content: what time is it?}
                - role: assistant
                  toolCalls:
                    - {id: call_1, function: {name: time__now, arguments: "{}"}}
                - {role: tool, toolCallId: call_1, content: "19:00"}
                - {role: user, content: and in Paris?}
              contactChannelRef: {name: reviewers}
              responseURL: https://example.com/hook
              baseURL: https://api.humanlayer.dev
              channelTokenFrom: {name: chan, key: TOKEN}
              threadID: "1234.5678"
            """
        )
    )
    assert isinstance(task, models.Task)
    spec = task.spec
    assert spec.response_url == "https://example.com/hook"
    assert spec.context_window[1].content == ""
    assert spec.context_window[1].tool_calls[0].type == "function"
    assert spec.last_user_message() == "and in Paris?"
    document = models.to_document(task)
    assert document["spec"]["responseUrl"] == "https://example.com/hook"
    assert document["spec"]["threadID"] == "1234.5678"


# ----------------------------------------------------------------------------- other kinds' rules


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("transport: stdio", "transport stdio needs command"),
        ("transport: http", "transport http needs url"),
        ("transport: http\n  url: ftp://x", "url must start with http:// or https://"),
        ("transport: sse\n  url: http://x", "spec.transport: must be one of stdio, http"),
        ("transport: stdio\n  command: x\n  env: [{name: A}]", "set exactly one of value or valueFrom"),
        ("transport: stdio\n  command: x\n  timeout: -5s", "invalid duration"),
        ("transport: stdio\n  command: x\n  approval: {tools: [x]}", "approval needs approvalContactChannel"),
    ],
)
def test_mcpserver_rules(spec: str, expected: str) -> None:
    result = load(
        f"apiVersion: acp.gitops.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: s}}\nspec:\n  {spec}\n"
    )
    assert len(result.errors) == 1, messages(result)
    assert expected in str(result.errors[0])


def test_acp_mcpserver_with_resources_and_approval_channel() -> None:
    server = only(
        load(
            """
            apiVersion: acp.humanlayer.dev/v1alpha1
            kind: MCPServer
            metadata: {name: fetch}
            spec:
              transport: stdio
              command: uvx
              args: [mcp-server-fetch]
              env:
                - {name: LOG_LEVEL, value: debug}
                - name: FETCH_TOKEN
                  valueFrom: {secretKeyRef: {name: fetch, key: TOKEN}}
              resources: {limits: {cpu: 500m, memory: 512Mi}, requests: {cpu: 1}}
              approvalContactChannel: {name: approvers}
              approval: {tools: ["write_*", fetch], except: [write_log]}
              timeout: 1m30s
            """
        )
    )
    assert isinstance(server, models.MCPServer)
    spec = server.spec
    assert spec.timeout == "1m30s"
    assert spec.timeout_seconds == 90.0
    assert [spec.needs_approval(t) for t in ("fetch", "write_file", "write_log", "read")] == [
        True,
        True,
        False,
        False,
    ]
    everything = spec.model_copy(update={"approval": None})
    assert everything.needs_approval("read")
    nobody = spec.model_copy(update={"approval": None, "approval_contact_channel": None})
    assert not nobody.needs_approval("fetch")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("type: slack", "type slack needs a slack block"),
        ("type: email", "type email needs an email block"),
        (
            "type: slack\n  slack: {channelOrUserID: general}",
            "spec.slack.channelOrUserID: must match the pattern",
        ),
        ("type: email\n  email: {address: nobody}", "spec.email.address: must match the pattern"),
        ("git: {forge: bitbucket}", "spec.git.forge: must be one of none, github, gitea, gitlab"),
        ("channelId: c1", "channelApiKeyFrom and channelId go together"),
    ],
)
def test_contactchannel_rules(spec: str, expected: str) -> None:
    result = load(
        f"apiVersion: acp.gitops.dev/v1alpha1\nkind: ContactChannel\nmetadata: {{name: c}}\nspec:\n  {spec}\n"
    )
    assert len(result.errors) == 1, messages(result)
    assert expected in str(result.errors[0])


def test_contactchannels_of_acp_and_ours() -> None:
    result = load(
        """
        apiVersion: acp.humanlayer.dev/v1alpha1
        kind: ContactChannel
        metadata: {name: slack-ops}
        spec:
          type: slack
          apiKeyFrom: {secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}}
          slack:
            channelOrUserID: C07HR5JL15F
            contextAboutChannelOrUser: the ops channel
            allowedResponderIDs: [U123]
        ---
        apiVersion: acp.gitops.dev/v1alpha1
        kind: ContactChannel
        metadata: {name: reviewers}
        spec:
          git:
            forge: github
            tokenFrom: {secretKeyRef: {name: github, key: GITHUB_TOKEN}}
            reviewers: [alice]
            approvers: [alice, bob]
            allowArgumentEdits: true
            timeout: 24h
        """
    )
    assert result.errors == ()
    slack, git = (item.resource for item in result.loaded)
    assert isinstance(slack, models.ContactChannel)
    assert isinstance(git, models.ContactChannel)
    assert slack.spec.slack is not None
    assert slack.spec.slack.allowed_responder_ids == ["U123"]
    assert models.to_document(slack)["spec"]["slack"]["channelOrUserID"] == "C07HR5JL15F"
    assert git.spec.git is not None
    assert git.spec.git.timeout_seconds == 86400


def test_agent_limits() -> None:
    agent = only(
        load(
            """
            apiVersion: acp.gitops.dev/v1alpha1
            kind: Agent
            metadata: {name: a}
            spec:
              llmRef: {name: l}
              system: hi
              limits: {maxTurns: 10, maxTokens: 50000, timeout: 30m}
            """
        )
    )
    assert isinstance(agent, models.Agent)
    assert agent.spec.limits.max_turns == 10
    assert agent.spec.limits.timeout_seconds == 1800
    assert models.AgentLimits().timeout_seconds is None


# ----------------------------------------------------------------------------- documents


def full_task() -> models.Task:
    return models.Task(
        metadata=models.ObjectMeta(
            name="hello",
            annotations={meta.ANNOTATION_SOURCE: "tasks/hello.yaml", meta.ANNOTATION_SPEC_COMMIT: "3f2c9e1"},
        ),
        spec=models.TaskSpec(
            agent_ref=models.LocalObjectReference(name="my-assistant"), user_message="Time?"
        ),
        status=models.TaskStatus(
            phase=meta.TaskPhase.FinalAnswer,
            ready=True,
            status=meta.Condition.Ready,
            status_detail="LLM final response received",
            start_time="2026-11-22T10:00:00.123456Z",
            turns=2,
            usage=models.Usage(prompt_tokens=180, completion_tokens=41),
            tool_call_request_id="k3x9q2a",
            output="19:00",
            context_window=[
                models.Message(role="system", content="You are helpful."),
                models.Message(role="user", content="Time?"),
                models.Message(
                    role="assistant",
                    tool_calls=[
                        models.MessageToolCall(
                            id="call_1",
                            function=models.FunctionCall(name="time__now", arguments='{"tz": "UTC"}'),
                        )
                    ],
                ),
                models.Message(role="tool", tool_call_id="call_1", content="19:00"),
                models.Message(role="assistant", content="19:00"),
            ],
            delivery={},
        ),
    )


def full_toolcall() -> models.ToolCall:
    return models.ToolCall(
        metadata=models.ObjectMeta(
            name="hello-k3x9q2a-tc-01",
            labels={meta.LABEL_TASK: "hello", meta.LABEL_TOOLCALL_REQUEST: "k3x9q2a"},
        ),
        spec=models.ToolCallSpec(
            tool_call_id="call_1",
            task_ref=models.LocalObjectReference(name="hello"),
            tool_ref=models.LocalObjectReference(name="time__now"),
            tool_type=meta.ToolType.MCP,
            arguments='{"tz": "UTC"}',
        ),
        status=models.ToolCallStatus(
            phase=meta.ToolCallPhase.Succeeded,
            status=meta.Condition.Succeeded,
            attempt=1,
            result="19:00",
            approval=models.ToolCallApproval(branch="acp/approvals/hello-k3x9q2a-tc-01", pull_request=7),
        ),
    )


def test_to_document_matches_the_appendix_shape() -> None:
    document = models.to_document(full_task())
    assert list(document) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert document["apiVersion"] == "acp.gitops.dev/v1alpha1"
    assert document["spec"] == {"agentRef": {"name": "my-assistant"}, "userMessage": "Time?"}
    assert document["status"]["usage"] == {"promptTokens": 180, "completionTokens": 41}
    assert document["status"]["contextWindow"][2] == {
        "role": "assistant",
        "content": "",
        "toolCalls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "time__now", "arguments": '{"tz": "UTC"}'},
            }
        ],
    }
    assert document["status"]["contextWindow"][3] == {
        "role": "tool",
        "content": "19:00",
        "toolCallId": "call_1",
    }
    assert document["status"]["delivery"] == {}  # an empty dict that is not the default is kept
    assert "labels" not in document["metadata"]
    assert document["status"]["phase"] == "FinalAnswer"


@pytest.mark.parametrize("make", [full_task, full_toolcall])
def test_document_round_trip_through_yaml(make) -> None:
    original = make()
    text = yaml.dump(models.to_document(original), Dumper=yaml.CSafeDumper, sort_keys=False)
    assert models.from_document(yaml.load(text, Loader=yaml.CSafeLoader)) == original


def test_document_round_trip_of_every_loaded_manifest() -> None:
    result = loader.load_file("getting-started.yaml", KUBECHAIN_GETTING_STARTED.encode())
    for item in result.loaded:
        assert models.from_document(models.to_document(item.resource)) == item.resource


def test_from_document_errors_are_resource_errors() -> None:
    with pytest.raises(
        ResourceError, match=r'^status/tasks/x.yaml: Task "x": spec.agentRef: field required$'
    ):
        models.from_document(
            {
                "apiVersion": meta.API_VERSION,
                "kind": "Task",
                "metadata": {"name": "x"},
                "spec": {"userMessage": "h"},
            },
            path="status/tasks/x.yaml",
        )
    with pytest.raises(ResourceError, match="unknown kind"):
        models.from_document({"kind": "Nope"})
    with pytest.raises(ResourceError, match="expected a mapping"):
        models.from_document(["not", "a", "mapping"])


def test_status_models_are_lenient_and_default() -> None:
    assert models.TaskStatus().phase is None
    assert models.TaskStatus().context_window == []
    status = models.TaskStatus.model_validate(
        {"phase": "Pending", "spanContext": {"traceID": "x"}, "newField": 1}
    )
    assert status.phase is meta.TaskPhase.Pending
    assert models.ToolCallStatus().attempt == 0
    assert models.MCPServerStatus.model_validate({"tools": [{"name": "t"}]}).tools[0].input_schema == {}


def test_agent_status_uses_acp_aliases() -> None:
    status = models.AgentStatus.model_validate(
        {
            "validMCPServers": [{"name": "fetch", "tools": ["fetch"]}],
            "validHumanContactChannels": [{"name": "c"}],
        }
    )
    assert status.valid_mcp_servers[0].tools == ["fetch"]
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    assert "validMCPServers" in dumped
    assert "validSubAgents" not in dumped


@pytest.mark.parametrize(
    ("text", "preview"),
    [("short", "short"), ("x" * 50, "x" * 50), ("y" * 51, "y" * 47 + "...")],
)
def test_user_msg_preview(text: str, preview: str) -> None:
    assert models.user_msg_preview(text) == preview


# ----------------------------------------------------------------------------- meta


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("llm", Kind.LLM),
        ("LLMs", Kind.LLM),
        ("agent", Kind.Agent),
        ("Agents", Kind.Agent),
        ("mcp", Kind.MCPServer),
        ("MCPServer", Kind.MCPServer),
        ("mcpservers", Kind.MCPServer),
        ("cc", Kind.ContactChannel),
        ("contactchannels", Kind.ContactChannel),
        ("task", Kind.Task),
        ("tasks", Kind.Task),
        ("tc", Kind.ToolCall),
        ("toolcall", Kind.ToolCall),
        ("ToolCalls", Kind.ToolCall),
    ],
)
def test_resolve_kind(text: str, kind: Kind) -> None:
    assert meta.resolve_kind(text) is kind


def test_resolve_kind_lists_what_is_accepted() -> None:
    with pytest.raises(
        UserError, match=r"unknown kind 'pods': use one of llm/llms, agent/agents, mcpserver/"
    ):
        meta.resolve_kind("pods")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("45", 45.0),
        ("0.5", 0.5),
        (10, 10.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert meta.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5 minutes", "m5", "1y", "-3s", "-1", "nan", True, None, [1]])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        meta.parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(Kind))
def test_status_paths_round_trip(kind: Kind) -> None:
    path = meta.status_path(kind, "hello-1")
    if kind in meta.FANNED_OUT:
        # the digest `printf %s hello-1 | sha256sum` prints: 93bd07f0...
        digest = hashlib.sha256(b"hello-1").hexdigest()
        assert path == f"status/{meta.PLURALS[kind]}/{digest[0]}/{digest[1]}/{digest[2]}/hello-1.yaml"
        assert meta.parse_status_path(meta.legacy_status_path(kind, "hello-1")) == (kind, "hello-1")
    else:
        assert path == f"status/{meta.PLURALS[kind]}/hello-1.yaml"
    assert meta.parse_status_path(path) == (kind, "hello-1")
    archived = meta.status_path(kind, "hello-1", root="archive")
    assert archived == "archive/" + path.removeprefix("status/")
    assert meta.parse_status_path(archived) == (kind, "hello-1")


def test_fanout_spreads_names_evenly() -> None:
    # 4,096 leaves: 100,000 sequential names put at most a few dozen in any one directory.
    counts = collections.Counter(meta.fanout(f"bench-{i:06d}") for i in range(100_000))
    assert len(counts) == 16**3
    assert max(counts.values()) < 60


@pytest.mark.parametrize(
    "path",
    [
        "status/pods/x.yaml",
        "status/tasks/x.yml",
        "status/tasks/Bad_Name.yaml",
        "tasks/x.yaml",
        "status/tasks/a/b.yaml",
        "status/tasks/0/0/0/x.yaml",  # not where x's digest puts it
        "archive/llms/a/b/c/x.yaml",
        "archive/tasks/x.yaml",  # archives were always fanned out
    ],
)
def test_parse_status_path_refuses_other_paths(path: str) -> None:
    assert meta.parse_status_path(path) is None


@pytest.mark.parametrize("root", ["status", "archive"])
@pytest.mark.parametrize("kind", [Kind.Task, Kind.ToolCall, Kind.LLM])
def test_names_under_a_listing_are_what_parse_status_path_reads(root: str, kind: Kind) -> None:
    """A list's names come from `names_under` (its fast way through 100,000 paths): for paths of
    every shape, the same answer as asking `parse_status_path` path by path."""
    plural = meta.PLURALS[kind]
    good = [f"t-{i}" for i in range(50)] + ["a", "x" * 63]
    paths = [meta.status_path(kind, name, root=root) for name in good]
    paths += [meta.legacy_status_path(kind, name) for name in ("old-1", "t-3")]  # flat, and both
    paths += [
        f"{root}/{plural}/0/0/0/x.yaml",  # not where x's digest puts it
        f"{root}/{plural}/{meta.fanout('Bad_Name')}/Bad_Name.yaml",
        f"{root}/{plural}/{meta.fanout('y' * 64)}/{'y' * 64}.yaml",  # too long
        f"{root}/{plural}/{meta.fanout('z')}/z.yml",
        f"{root}/{plural}/{meta.fanout('z')}/extra/z.yaml",
        f"{root}/{plural}/a/b/c.yaml",
        f"{root}/{plural}/0/0/0/caf\udce9.yaml",  # a file name that is not UTF-8 (git's bytes, escaped)
        f"{root}/pods/x.yaml",
        f"{root}/{plural}/.yaml",
    ]
    listed = {path: f"{index:040x}" for index, path in enumerate(paths)}
    expected: dict[str, str] = {}
    for path, sha in listed.items():
        found = meta.parse_status_path(path)
        if found is not None and found[0] == kind:
            expected[found[1]] = sha
    assert meta.names_under(listed, kind, root) == expected
    assert set(good) <= set(expected)


def test_terminal_phases() -> None:
    assert {"FinalAnswer", "Failed", "Cancelled"} == meta.TERMINAL_TASK_PHASES
    assert {
        "Succeeded",
        "Failed",
        "ToolCallRejected",
        "ErrorRequestingHumanApproval",
        "ErrorRequestingHumanInput",
    } == meta.TERMINAL_TOOLCALL_PHASES


def test_time_helpers() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 22, 19, 0, 0, 123456, tzinfo=timezone(timedelta(hours=9)))
    text = meta.rfc3339(moment.timestamp())
    assert text == "2026-11-22T10:00:00.123456Z"
    assert meta.parse_rfc3339(text) == moment.timestamp()
    assert meta.parse_rfc3339("2026-11-22T19:00:00.123456+09:00") == moment.timestamp()
    with pytest.raises(ValueError, match="no time zone"):
        meta.parse_rfc3339("2026-11-22T10:00:00")


def test_rfc3339_writes_what_datetime_writes() -> None:
    """`rfc3339` formats with `time.gmtime` and rounds microseconds itself: the very text of
    `datetime`'s strftime, at the roundings' edges, before the epoch and in early years too."""
    import random
    from datetime import UTC, datetime

    rng = random.Random(11)
    stamps = [0.0, -0.5, 0.9999995, 1.0000005, 1764000000.0000005, 1764000000.9999995, -62135596800.0]
    stamps += [rng.uniform(-62135596800, 253402300798) for _ in range(20000)]
    edges = [0.5e-6, 1.5e-6, 0.9999995, 0.4999995]  # half a microsecond: rounded to even
    stamps += [rng.randint(0, 2**32) + rng.choice(edges) for _ in range(20000)]
    for ts in stamps:
        assert meta.rfc3339(ts) == datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ts


def test_parse_rfc3339_reads_its_own_form_as_datetime_does() -> None:
    """`rfc3339`'s form is parsed by hand (no `datetime` import for `history`): the same floats as
    `datetime.fromisoformat`, for every kind of date, and its bad dates still refused."""
    import random
    from datetime import datetime

    rng = random.Random(7)
    # From 1000-01-01 (`rfc3339` writes earlier years unpadded, as strftime does) to 9999-12-31.
    stamps = [0.0, 951782400.0, 4107542399.999999, -30610224000.0, 253402300799.0]
    stamps += [rng.uniform(-30610224000, 253402300798) for _ in range(20000)]
    for ts in stamps:
        for text in (meta.rfc3339(ts), meta.rfc3339(ts)[:19] + "Z"):
            expected = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            assert meta.parse_rfc3339(text) == expected, text
    for bad in (
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "0000-01-01T00:00:00Z",
    ):
        with pytest.raises(ValueError, match=r"out of range|must be in|Invalid isoformat"):
            meta.parse_rfc3339(bad)
    leap = datetime.fromisoformat("2024-02-29T23:59:59.5+00:00").timestamp()
    assert meta.parse_rfc3339("2024-02-29T23:59:59.5Z") == leap  # not its form: datetime reads it


@pytest.mark.parametrize(
    "module",
    [
        "meta",
        "common",
        "models",
        "loader",
        "diagnostics",
        "secretscan",
        "kinds.llm",
        "kinds.agent",
        "kinds.mcpserver",
        "kinds.contactchannel",
        "kinds.task",
        "kinds.toolcall",
    ],
)
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(f"gitops_acp.resources.{module}")
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []

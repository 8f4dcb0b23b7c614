"""deploy/ (DESIGN §11): the Kubernetes manifests, rendered and checked offline, without a cluster.

There is no kustomize binary here and no package on PyPI or npm that renders a kustomization
offline (the Python ones either wrap the Go binary or need Python 3.14), so `render` below builds
the small subset of kustomize that deploy/ uses: `resources` (files and directories), `namespace`,
`labels` (`includeTemplates`), `images`, `replicas`, `configMapGenerator` (literals, files,
`behavior: merge`, the content-hash name suffix and the references to it) and `patches` (inline JSON
6902 with a target). Anything else in a kustomization fails the test, so deploy/ cannot start using
a feature this renderer would silently ignore (docs/deploy.md says so).

Each rendered object is then validated against Kubernetes' own JSON schemas (kubernetes-validate,
strict: an unknown field is an error), and the container is checked against the program it runs:
its arguments parsed by the real `gitops-acp serve` parser, the shard taken from each pod's host
name as `serve` takes it, the probes and Services against `serve --http` and the routes it serves,
every mounted Secret and ConfigMap against the flag that reads it, the policy through the real
policy loader, the user and paths against the Dockerfile, and the git credential helper run by
real git.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gitops_acp import policy
from gitops_acp.cli import main as cli_main
from gitops_acp.cli.commands import serve
from gitops_acp.errors import UserError
from gitops_acp.reactor import webhooks

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = {"base": DEPLOY, "example": DEPLOY / "overlays" / "example"}
#: The oldest Kubernetes release still maintained upstream when this was written; the schemas
#: ship with kubernetes-validate (no network).
KUBERNETES_VERSION = "1.33"
_KNOWN_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "replicas",
    "configMapGenerator",
    "patches",
}
_GENERATED = "test-deploy/generated"  # marks a generated ConfigMap until its name gets the hash


# -- the kustomize subset ------------------------------------------------------------------------


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kustomize build directory` prints, as objects (for the subset deploy/ uses)."""
    objects = _build(directory)
    return _hash_generated(objects)


def _build(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KNOWN_FIELDS
    assert not unknown, (
        f"{directory}/kustomization.yaml: {sorted(unknown)} not rendered by tests/test_deploy.py"
    )
    assert kustomization["kind"] == "Kustomization"
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += _build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        _generate(objects, generator, directory)
    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors"), "labels.includeSelectors is not rendered here"
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
            template = obj.get("spec", {}).get("template")
            if entry.get("includeTemplates") and template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        for container in _containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                new_name = image.get("newName", name)
                container["image"] = f"{new_name}:{image['newTag']}" if "newTag" in image else new_name
    for entry in kustomization.get("replicas", []):
        found = [
            obj for obj in objects if obj["metadata"]["name"] == entry["name"] and "replicas" in obj["spec"]
        ]
        assert found, f"replicas: no workload named {entry['name']}"
        for obj in found:
            obj["spec"]["replicas"] = entry["count"]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matched = [
            obj
            for obj in objects
            if obj["kind"] == target["kind"] and obj["metadata"]["name"] == target["name"]
        ]
        assert matched, f"patches: nothing matches {target}"
        operations = yaml.safe_load(patch["patch"])
        assert isinstance(operations, list), "only JSON 6902 patches are rendered here"
        for obj in matched:
            for operation in operations:
                _json_patch(obj, operation)
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _generate(objects: list[dict[str, Any]], generator: dict[str, Any], directory: Path) -> None:
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for entry in generator.get("files", []):
        key, _, rel = entry.rpartition("=")
        data[key or PurePosixPath(rel).name] = (directory / rel).read_text()
    existing = [
        obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == generator["name"]
    ]
    behavior = generator.get("behavior", "create")
    if behavior == "create":
        assert not existing, f"configMapGenerator {generator['name']}: exists already (behavior: merge?)"
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"], "annotations": {_GENERATED: "true"}},
                "data": data,
            }
        )
    else:
        assert behavior in ("merge", "replace"), f"configMapGenerator {generator['name']}: {behavior}"
        assert existing, f"configMapGenerator {generator['name']}: nothing to {behavior}"
        target = existing[0]
        target["data"] = {**target["data"], **data} if behavior == "merge" else data


def _hash_generated(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each generated ConfigMap kustomize's `<name>-<hash of its content>` and follow references."""
    renamed: dict[str, str] = {}
    for obj in objects:
        annotations = obj["metadata"].get("annotations", {})
        if obj["kind"] == "ConfigMap" and annotations.pop(_GENERATED, None):
            if not annotations:
                del obj["metadata"]["annotations"]
            digest = hashlib.sha256(json.dumps(obj["data"], sort_keys=True).encode()).hexdigest()[:10]
            renamed[obj["metadata"]["name"]] = obj["metadata"]["name"] = f"{obj['metadata']['name']}-{digest}"
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = renamed.get(
                    volume["configMap"]["name"], volume["configMap"]["name"]
                )
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = renamed.get(ref["name"], ref["name"])
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                if ref is not None:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
    return objects


def _json_patch(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    index: Any = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
    op = operation["op"]
    if op == "test":
        assert node[index] == operation["value"], f"patch test failed at {operation['path']}: {node[index]!r}"
    elif op == "replace":
        assert (isinstance(node, list) and index < len(node)) or (
            not isinstance(node, list) and index in node
        )
        node[index] = operation["value"]
    elif op == "add":
        if isinstance(node, list):
            node.insert(index, operation["value"])
        else:
            node[index] = operation["value"]
    elif op == "remove":
        del node[index]
    else:
        raise AssertionError(f"JSON patch op {op} is not rendered here")


def _containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is not None:
            found += pod.get("initContainers", []) + pod["containers"]
    return found


# -- what the tests look at ----------------------------------------------------------------------


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _config_map(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The generated ConfigMap `name` (rendered as `name-<hash>`)."""
    found = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and re.fullmatch(rf"{name}-[0-9a-f]{{10}}", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one ConfigMap {name}-<hash>"
    return found[0]


def _environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom, then env)."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config = _one(objects, "ConfigMap", source["configMapRef"]["name"])
        environment.update(config["data"])
    for variable in container.get("env", []):
        assert "value" in variable, f"env {variable['name']}: only literal values are expected here"
        environment[variable["name"]] = variable["value"]
    return environment


@pytest.fixture(params=sorted(KUSTOMIZATIONS), scope="module")
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[request.param])


@pytest.fixture
def statefulset(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(rendered, "StatefulSet")


@pytest.fixture
def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["serve"]
    return dict(containers[0])


@pytest.fixture
def parsed(rendered: list[dict[str, Any]], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The container's arguments parsed by the real `gitops-acp` parser, in the container's environment.

    Parsed leniently here so that each test checks its own part; `test_serve_accepts_the_arguments`
    parses them strictly, as the container does.
    """
    environment = _environment(rendered, container)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    argv = list(container["args"])
    args, _unknown = cli_main.build_parser(argv).parse_known_args(argv)
    assert args.command == "serve"
    return args


def _flag(container: dict[str, Any], flag: str) -> str:
    """The value the container's arguments give `flag` (as written, parsed or not)."""
    args = container["args"]
    assert flag in args, f"{flag} is not set"
    return str(args[args.index(flag) + 1])


# -- the tests ------------------------------------------------------------------------------------


def test_every_object_is_valid_for_kubernetes(rendered: list[dict[str, Any]]) -> None:
    assert {o["kind"] for o in rendered} == {"StatefulSet", "Service", "ConfigMap"}
    for obj in rendered:
        version = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert version == KUBERNETES_VERSION, obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gitops-acp"


def test_the_validator_refuses_a_wrong_manifest(statefulset: dict[str, Any]) -> None:
    """The schemas are really applied: a misspelt field and a wrong type are both refused."""
    misspelt = copy.deepcopy(statefulset)
    misspelt["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_no_secret_is_shipped(rendered: list[dict[str, Any]]) -> None:
    """Secrets are created by hand from files (docs/deploy.md): never in the repository."""
    assert not [o for o in rendered if o["kind"] == "Secret"]
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "secretGenerator" not in path.read_text(), path


def test_serve_accepts_the_arguments(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every argument is one `gitops-acp serve` knows (`--api-tokens` included): no exit 2 at start."""
    monkeypatch.setenv("HOSTNAME", "acp-0")
    argv = list(container["args"])
    parser = cli_main.build_parser(argv)
    _args, unknown = parser.parse_known_args(argv)
    assert unknown == [], f"gitops-acp serve does not know {unknown}"
    args = parser.parse_args(argv)
    assert str(args.api_tokens) == _flag(container, "--api-tokens")


def test_the_arguments_are_serve_s(parsed: Any, rendered: list[dict[str, Any]]) -> None:
    """`serve` serves the configured remote, as every other command in the pod does."""
    config = _config_map(rendered, "acp-config")
    assert parsed.repo == config["data"]["GITOPS_ACP_REPO"]
    assert parsed.once is False  # a Deployment's reconciler runs until stopped
    assert parsed.status_branch is None  # each shard writes its own branch


def test_replicas_are_the_shards(
    parsed: Any, statefulset: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pod acp-I serves shard I of N = replicas, as `serve` reads HOSTNAME; acp-N would be refused."""
    replicas = statefulset["spec"]["replicas"]
    name = statefulset["metadata"]["name"]
    assert parsed.shard == f"auto/{replicas}"
    for ordinal in range(replicas):
        monkeypatch.setenv("HOSTNAME", f"{name}-{ordinal}")
        shard = serve.shard_from(parsed)
        assert (shard.index, shard.count) == (ordinal, replicas)
        assert shard.branch == f"acp/status-{ordinal}-of-{replicas}"
    monkeypatch.setenv("HOSTNAME", f"{name}-{replicas}")
    with pytest.raises(UserError, match="not below"):
        serve.shard_from(parsed)
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"


def test_probes_and_services_reach_serve_http(
    parsed: Any, statefulset: dict[str, Any], container: dict[str, Any], rendered: list[dict[str, Any]]
) -> None:
    host, port = webhooks.parse_address(parsed.http)
    assert host == "0.0.0.0"  # reachable from the kubelet and the Services, not only loopback
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}

    def resolved(value: str | int) -> int:
        return ports[value] if isinstance(value, str) else value

    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert {resolved(probe["port"]) for probe in probes.values()} == {port}
    # serve's own HTTP application routes them (test_the_container_serves_a_first_task asks them)
    served = {getattr(route, "path", None) for route in webhooks.app(lambda forge, branch: None, None).routes}
    assert {probe["path"] for probe in probes.values()} <= served
    services = {s["metadata"]["name"]: s for s in rendered if s["kind"] == "Service"}
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["serviceName"] in services
    assert services[statefulset["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        assert {resolved(p["targetPort"]) for p in service["spec"]["ports"]} == {port}
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_mount_is_read_by_a_flag(
    parsed: Any, statefulset: dict[str, Any], container: dict[str, Any], rendered: list[dict[str, Any]]
) -> None:
    """Each Secret or ConfigMap mounted is where a flag (or git's environment) reads it, and back."""
    pod = statefulset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"] if m["name"] in volumes}
    environment = _environment(rendered, container)
    files = {flag: _flag(container, flag) for flag in ("--policy", "--api-tokens", "--webhook-secret-file")}
    assert str(parsed.policy) == files["--policy"]
    assert str(parsed.webhook_secret_file) == files["--webhook-secret-file"]
    claimed: set[str] = set()
    for flag, path in files.items():
        directory, key = str(Path(path).parent), Path(path).name
        assert directory in mounts, f"{flag} {path}: no volume mounted at {directory}"
        volume = mounts[directory]
        if "configMap" in volume:
            assert key in _one(rendered, "ConfigMap", volume["configMap"]["name"])["data"], flag
        else:
            assert [item["path"] for item in volume["secret"]["items"]] == [key], flag
        claimed.add(directory)
    secrets_dir = str(parsed.secrets_dir)
    for path, volume in mounts.items():
        if PurePosixPath(path).parent == PurePosixPath(secrets_dir):  # <dir>/<name>/<key>
            assert "secret" in volume, path
            assert PurePosixPath(path).name == volume["secret"]["secretName"], path
            claimed.add(path)
        elif "secret" in volume and any(f"{path}/" in value for value in environment.values()):
            claimed.add(path)  # the git credentials (GIT_SSH_COMMAND, the credential helper)
    for path, volume in mounts.items():
        assert path in claimed or not ("secret" in volume or "configMap" in volume), (
            f"{path}: mounted but read by no flag"
        )
    assert any(PurePosixPath(path).parent == PurePosixPath(secrets_dir) for path in mounts), (
        "--secrets-dir is empty"
    )
    for mount in container["volumeMounts"]:
        if mount["name"] in volumes and (
            "secret" in volumes[mount["name"]] or "configMap" in volumes[mount["name"]]
        ):
            assert mount.get("readOnly") is True, mount["mountPath"]


def test_the_mirror_is_on_the_claimed_volume(
    parsed: Any, statefulset: dict[str, Any], container: dict[str, Any]
) -> None:
    """docs/remotes.md: the mirror is durable state, so --cache-dir is on the volumeClaimTemplate."""
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    on_claims = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims]
    assert any(Path(parsed.cache_dir).is_relative_to(path) for path in on_claims), parsed.cache_dir
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "XDG_CACHE_HOME=/cache" in dockerfile
    assert "/cache" in on_claims


def test_the_pod_runs_as_the_image_s_user(statefulset: dict[str, Any], container: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile)[1])  # type: ignore[index]
    home = re.search(r"^WORKDIR (\S+)", dockerfile.split("USER ")[-1], re.M)[1]  # type: ignore[index]
    assert 'ENTRYPOINT ["tini", "--", "gitops-acp"]' in dockerfile
    assert "command" not in container  # the image's entrypoint runs, with our args
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == uid  # the cache volume and the secrets readable
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", home, "/cache"} <= writable
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_the_image_is_tagged(container: dict[str, Any]) -> None:
    name, _, tag = container["image"].rpartition(":")
    assert name.endswith("gitops-acp")
    assert tag
    assert tag != "latest"


def test_the_policy_loads(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    """The shipped policy passes the real loader (a mistake in it would stop every pod)."""
    path = tmp_path / "policy.yaml"
    path.write_text(_config_map(rendered, "acp-policy")["data"]["policy.yaml"])
    policy.load(path)


def test_git_gets_the_mounted_credentials(
    rendered: list[dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> None:
    """Real git asks the manifest's credential helper, which answers from the mounted acp-git files."""
    environment = _environment(rendered, container)
    mounted = tmp_path / "git"
    mounted.mkdir()
    (mounted / "username").write_text("x-access-token")
    (mounted / "password").write_text("ghp_not-a-real-token")
    git_env = {
        key: value.replace("/etc/acp/git/", f"{mounted}/")
        for key, value in environment.items()
        if key.startswith("GIT_")
    }
    env = {**os.environ, **git_env, "GIT_TERMINAL_PROMPT": "0"}
    answer = subprocess.run(
        ["git", "credential", "fill"],
        input="protocol=https\nhost=github.com\npath=example/agents.git\n\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    ).stdout
    assert "username=x-access-token\n" in answer
    assert "password=ghp_not-a-real-token\n" in answer
    # SSH (a deploy key): the image has an ssh client, which is told where the mounted key is
    assert "openssh-client" in (ROOT / "Dockerfile").read_text()
    ssh = shlex.split(git_env["GIT_SSH_COMMAND"])
    assert ssh[0] == "ssh"
    assert "BatchMode=yes" in ssh
    assert Path(ssh[ssh.index("-i") + 1]).parent == mounted


# -- the container's command, run ------------------------------------------------------------------

API = "acp.gitops.dev/v1alpha1"
AGENT = "deploy-agent"
LLM = "deploy-llm"


def _documented_secrets() -> set[str]:
    """The Secrets docs/deploy.md tells people to create (`kubectl ... create secret generic NAME`)."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    return set(re.findall(r"create secret generic ([a-z0-9-]+)", text))


def test_the_documented_secrets_are_the_mounted_ones(statefulset: dict[str, Any]) -> None:
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    assert {v["secret"]["secretName"] for v in volumes if "secret" in v} == _documented_secrets()


@pytest.mark.e2e
def test_the_container_serves_a_first_task(tmp_path: Path) -> None:
    """The base's container, run as the pod would (its arguments and environment, the Secrets made as
    docs/deploy.md makes them, pod acp-1), against a remote: ready, a task created over the API as
    the token's person, answered by the stub LLM with the mounted key, a signed webhook accepted,
    every checkpoint on the remote, exit 0 on SIGTERM.

    What differs from a pod, and only that: paths under a temporary directory, the HTTP address on
    127.0.0.1, the remote a file:// URL.
    """
    from gitops_acp.store import shards
    from gitops_acp.testing.llm_stub.servers import StubServer
    from tests.conftest import commit_files, git

    objects = render(DEPLOY)
    statefulset = _one(objects, "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    root = tmp_path / "pod"

    tops = "|".join(sorted({re.escape(m["mountPath"].split("/")[1]) for m in container["volumeMounts"]}))
    under_a_mount = re.compile(rf"(?<![\w/.-])(/(?:{tops})(?=/|\b))")

    def local(value: str) -> str:
        return under_a_mount.sub(lambda match: f"{root}{match[1]}", value)

    # The Secrets, made as docs/deploy.md makes them.
    api_key, token, webhook_secret = "sk-deploy-test", secrets.token_hex(32), secrets.token_hex(16)
    contents = {
        "openai": {"OPENAI_API_KEY": api_key},
        "acp-git": {"username": "x-access-token", "password": "not-used-by-file-urls"},
        "acp-api-tokens": {
            "tokens.yaml": "- name: Alice Example\n  email: alice@example.com\n"
            "  roles: [operator, approver]\n"
            f"  sha256: {hashlib.sha256(token.encode()).hexdigest()}\n"
        },
        "acp-webhook": {"secret": webhook_secret + "\n"},
    }
    for mount in container["volumeMounts"]:
        volume, target = volumes.get(mount["name"], {}), Path(local(mount["mountPath"]))
        target.mkdir(parents=True)
        if "secret" in volume:
            data = contents[volume["secret"]["secretName"]]
            keys = [item["key"] for item in volume["secret"].get("items", [])] or list(data)
            for key in keys:
                (target / key).write_text(data[key])
        elif "configMap" in volume:
            for key, text in _one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (target / key).write_text(text)

    with StubServer(
        {"apiKey": api_key, "rules": [{"match": "capital", "content": "Mare Tranquillitatis"}]}
    ) as stub:
        remote, work = tmp_path / "agents.git", tmp_path / "work"
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
        git(tmp_path, "init", "-q", "-b", "main", str(work))
        commit_files(
            work,
            {
                "llm.yaml": f"apiVersion: {API}\nkind: LLM\nmetadata: {{name: {LLM}}}\nspec:\n"
                "  provider: openai\n  apiKeyFrom: {secretKeyRef: {name: openai, key: OPENAI_API_KEY}}\n"
                f"  parameters: {{model: stub-model, baseUrl: '{stub.url}'}}\n",
                "agent.yaml": f"apiVersion: {API}\nkind: Agent\nmetadata: {{name: {AGENT}}}\n"
                f"spec:\n  llmRef: {{name: {LLM}}}\n  system: You answer briefly.\n",
            },
        )
        git(work, "push", "-q", str(remote), "main")

        port = webhooks.listen("127.0.0.1", 0)
        address = port.getsockname()
        port.close()
        args = [local(arg) for arg in container["args"]]
        args[args.index("--http") + 1] = f"127.0.0.1:{address[1]}"
        environment = {key: local(value) for key, value in _environment(objects, container).items()}
        environment["GITOPS_ACP_REPO"] = f"file://{remote}"
        count = statefulset["spec"]["replicas"]
        env = {**os.environ, **environment, "HOSTNAME": "acp-1", "XDG_CACHE_HOME": local("/cache")}
        log = (tmp_path / "serve.log").open("w")
        serve_proc = subprocess.Popen(
            [sys.executable, "-m", "gitops_acp", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{address[1]}"
        try:
            probes = {
                kind: container[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe")
            }
            _wait(lambda: _get(base + probes["readinessProbe"])[0] == 200, serve_proc, tmp_path, "ready")
            assert _get(base + probes["livenessProbe"])[0] == 200
            name = next(f"hello-{i}" for i in range(100) if shards.shard_of(f"hello-{i}", count) == 1)
            task = {
                "name": name,
                "agentRef": {"name": AGENT},
                "userMessage": "What is the capital of the moon?",
            }
            code, created = _post(f"{base}/v1/tasks", task, token=token)
            assert code == 201, created
            assert _post(f"{base}/v1/tasks", task, token="not-a-token")[0] == 401

            def answered() -> bool:
                code, body = _get(f"{base}/v1/tasks/{name}", token=token)
                return code == 200 and (body.get("status") or {}).get("phase") == "FinalAnswer"

            _wait(answered, serve_proc, tmp_path, f"Task {name} FinalAnswer")
            assert "Mare Tranquillitatis" in json.dumps(_get(f"{base}/v1/tasks/{name}", token=token)[1])
            hook = json.dumps({"ref": "refs/heads/main"}).encode()
            signature = "sha256=" + hmac.new(webhook_secret.encode(), hook, hashlib.sha256).hexdigest()
            code, _ = _post(
                f"{base}/webhooks/github",
                hook,
                headers={"X-Hub-Signature-256": signature, "X-GitHub-Event": "push"},
            )
            assert code == 202
        finally:
            serve_proc.send_signal(signal.SIGTERM)
            try:
                exit_code = serve_proc.wait(60)
            finally:
                serve_proc.kill()
                log.close()
        assert exit_code == 0, (tmp_path / "serve.log").read_text()
    # The remote has the task on main, by Alice (the token's person), and shard 1's checkpoints.
    assert git(remote, "log", "-1", "--format=%an <%ae>", "main") == "Alice Example <alice@example.com>"
    assert f"{name}" in git(remote, "log", "--format=%B", f"acp/status-1-of-{count}")
    # `kubectl exec acp-0 -- gitops-acp get task NAME` (docs/deploy.md): the same remote, no flags
    shown = subprocess.run(
        [sys.executable, "-m", "gitops_acp", "get", "task", name],
        env={**env, "HOSTNAME": "acp-0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "FinalAnswer" in shown.stdout
    output = (tmp_path / "serve.log").read_text() + shown.stdout + shown.stderr
    for value in (api_key, token, webhook_secret):
        assert value not in output


def _request(
    url: str, *, data: bytes | None = None, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(
        url, data=data, headers=sent, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def _get(url: str, *, token: str | None = None) -> tuple[int, Any]:
    return _request(url, token=token)


def _post(
    url: str, body: Any, *, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _request(url, data=data, token=token, headers=headers)


def _wait(
    predicate: Any, proc: subprocess.Popen[Any], tmp_path: Path, what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {what}: serve {proc.poll()}: {(tmp_path / 'serve.log').read_text()[-2000:]}")
        time.sleep(0.1)

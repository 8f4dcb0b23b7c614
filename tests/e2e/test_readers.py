"""`get`, `describe` and `history` of one object print what the full path shows, and load no more.

One `serve --once` run: `chain` (ttlSecondsAfterFinished: 0) delegates to a worker that calls a
tool, and is archived with its child task and both tool calls; `tooled` calls a tool and stays in
the tip with its Task file on main; `kept` stays in the tip, its Task file removed from main
afterwards; `edited` stays in the tip, its Task file edited afterwards (main's spec is shown, which
takes the models to read); `later` is committed after the run (declared, not run yet).

The commands run as a person runs them (a new process, through `ReadOnlyRepo`); the expected
output is rendered in this process by the same renderers from what the full path reads: every
resource of `main` parsed with the pydantic models and every status file of the tip
(`views.snapshot` over a GitPython `GitRepo`), the archived files with plain git, and the events
from `history.events` over the `GitRepo`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitops_acp.cli import views
from gitops_acp.cli.commands import describe, get, history
from gitops_acp.resources.meta import ARCHIVE_ROOT, Kind, status_path
from gitops_acp.store import history as events_of
from gitops_acp.store import yamlio
from gitops_acp.store.git import GitRepo
from tests.conftest import git
from tests.e2e.conftest import (
    AcpRepo,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    no_servers_left,
    serve_args,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
)

pytestmark = pytest.mark.e2e

BOSS = "Boss: ask the worker (readers)."
WORKER = "Worker: count readers"
TOOLED = "Tooled: count once"
KEPT = "Kept: just answer."
EDITED = "Edited: just answer."
# Modules a one-object command needs only when it parses a file of main (or opens a GitRepo).
HEAVY = ("pydantic", "git", "asyncio", "logging", "gitops_acp.resources.models", "gitops_acp.store.git.repo")
# What `history` does without (issue 12: within 50 ms): PyYAML (store/statusfields.py reads its
# fields), argparse for a plain command line (cli/main.py), dataclasses (and the inspect they load),
# datetime (`meta.parse_rfc3339` reads its own form by hand; the lines are formatted with `time`),
# pathlib (the repository is found and its refs read with `os.path`: store/git/readonly.py),
# subprocess (git is started by store/git/spawn.py).
NOT_FOR_HISTORY = (
    "yaml",
    "subprocess",
    "argparse",
    "shutil",
    "dataclasses",
    "inspect",
    "datetime",
    "pathlib",
    "gitops_acp.store.readers",
)


@dataclass
class World:
    repo: AcpRepo
    objects: dict[str, tuple[Kind, str]]  # a role ("archived task", ...) -> the object
    archived: set[tuple[Kind, str]]


@pytest.fixture(scope="module")
def world(stub_process: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("readers")
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules(
            {
                "match": "^Boss:",
                "when": "first",
                "toolCalls": [call("delegate_to_agent__worker", message=WORKER)],
            },
            {"match": "^Worker:", "when": "first", "toolCalls": [call("tools__count", label="readers")]},
            {"match": "^Worker:", "when": "tool", "content": "worker says {tool}"},
            {"match": "^Boss:", "when": "tool", "content": "boss heard: {tool}"},
            {"match": "^Tooled:", "when": "first", "toolCalls": [call("tools__count", label="tooled")]},
            {"match": "^Tooled:", "when": "tool", "content": "tooled says {tool}"},
            {"match": "^Kept:", "content": "kept answer"},
            {"match": "^Edited:", "content": "edited answer"},
        )
        counter = base / "counter"
        chain = task_yaml("chain", BOSS, agent="boss") + "  ttlSecondsAfterFinished: 0\n"
        repo.commit(
            {
                "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker, counter=counter),
                "agents/boss.yaml": tool_agent_yaml("boss", sub_agents=("worker",)),
                "agents/worker.yaml": tool_agent_yaml("worker", servers=("tools",), description="Counts."),
                "tasks/chain.yaml": chain,
                "tasks/tooled.yaml": task_yaml("tooled", TOOLED, agent="worker"),
                "tasks/kept.yaml": task_yaml("kept", KEPT),
                "tasks/edited.yaml": task_yaml("edited", EDITED),
            },
            "Add agents and four tasks, one archived as soon as it finishes",
        )
        ran = cli(*serve_args(repo, "--log-dir", str(repo.logs), once=True), timeout=120)
        assert ran.returncode == 0, ran.stderr
        archive = git(repo.path, "log", "-1", "--format=%H", "--grep=^archive: ", "acp/status")
        assert archive, "nothing archived"
        (delegation,) = toolcalls_of(repo, "chain", rev=f"{archive}^")
        child = f"delegate-{delegation['metadata']['name']}"
        (worker_call,) = toolcalls_of(repo, child, rev=f"{archive}^")
        (tooled_call,) = toolcalls_of(repo, "tooled")
        repo.remove("tasks/kept.yaml")
        repo.commit(
            {"tasks/edited.yaml": task_yaml("edited", "Edited: asked again.")}, "Edit a task that ran"
        )
        repo.add_task("later", "Later: not run yet")
        objects = {
            "archived task, declared": (Kind.Task, "chain"),
            "archived child task": (Kind.Task, child),
            "archived tool call": (Kind.ToolCall, worker_call["metadata"]["name"]),
            "live task, declared": (Kind.Task, "tooled"),
            "live tool call": (Kind.ToolCall, tooled_call["metadata"]["name"]),
            "live task, file gone from main": (Kind.Task, "kept"),
            "live task, edited on main since": (Kind.Task, "edited"),
            "declared, not run yet": (Kind.Task, "later"),
            "agent": (Kind.Agent, "worker"),
        }
        archived = {objects[role] for role in objects if role.startswith("archived")}
        archived.add((Kind.ToolCall, delegation["metadata"]["name"]))
        yield World(repo, objects, archived)


def _expected(world: World) -> dict[tuple[Kind, str], tuple[dict[str, Any], bool]]:
    """Every object as the full path reads it, and whether it is archived."""
    with GitRepo.open(world.repo.path) as repo:
        whole = views.snapshot(repo)
        tip = repo.resolve("refs/heads/acp/status")
        assert tip is not None
        shown: dict[tuple[Kind, str], tuple[dict[str, Any], bool]] = {
            key: (doc, False) for key, doc in whole.objects.items()
        }
        for key in world.archived:
            observed = yamlio.load(repo.read_file(tip, status_path(*key, root=ARCHIVE_ROOT)) or b"")
            declared = whole.objects.get(key)
            if declared is None:
                shown[key] = (observed, True)
                continue
            # The spec as declared now, the status (and its annotations) as last reconciled.
            metadata = {**declared["metadata"], "annotations": observed["metadata"]["annotations"]}
            shown[key] = ({**declared, "metadata": metadata, "status": observed.get("status")}, True)
    return shown


def _events(world: World, key: tuple[Kind, str], n: int) -> list[events_of.Event]:
    with GitRepo.open(world.repo.path) as repo:
        return events_of.events(repo, kind=str(key[0]), name=key[1], n=n)


ROLES = [
    "archived task, declared",
    "archived child task",
    "archived tool call",
    "live task, declared",
    "live tool call",
    "live task, file gone from main",
    "live task, edited on main since",
    "declared, not run yet",
    "agent",
]


@pytest.mark.parametrize("role", ROLES)
def test_get_prints_what_the_full_path_shows(world: World, role: str) -> None:
    key = world.objects[role]
    document, _archived = _expected(world)[key]
    for output in (None, "wide", "yaml", "json"):
        shown = cli(
            "--repo", str(world.repo.path), "get", str(key[0]), key[1], *(["-o", output] if output else [])
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == get.render(key[0], [document], one=True, output=output) + "\n", output
    if role.startswith("archived"):
        assert document["status"]["phase"] in ("FinalAnswer", "Succeeded")
    if role == "declared, not run yet":
        assert "status" not in document
    if role == "live task, edited on main since":  # the spec as declared now, the status as it ran
        assert document["spec"]["userMessage"] == "Edited: asked again."
        assert document["status"]["contextWindow"][-2]["content"] == EDITED


@pytest.mark.parametrize("role", ROLES)
def test_describe_and_history_print_what_the_full_path_shows(world: World, role: str) -> None:
    key = world.objects[role]
    document, archived = _expected(world)[key]
    described = cli("--repo", str(world.repo.path), "describe", str(key[0]), key[1])
    assert described.returncode == 0, described.stderr
    events = _events(world, key, 20)
    assert described.stdout == describe.render(*key, document, archived=archived, events=events) + "\n"
    assert described.stdout.count("Archived:     yes") == (1 if archived else 0)
    listed = cli("--repo", str(world.repo.path), "history", str(key[0]), key[1], "-n", "20")
    if role == "declared, not run yet":
        assert listed.returncode == 1
        assert listed.stderr == f'error: Task "{key[1]}" has no checkpoints on the status branch\n'
        return
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == history.render(events) + "\n"
    assert ("-> Archived" in listed.stdout.splitlines()[-1]) == archived
    last_two = cli("--repo", str(world.repo.path), "history", str(key[0]), key[1], "-n", "2")
    assert last_two.stdout.splitlines() == listed.stdout.splitlines()[-2:]


class _Loaded(list[str]):
    """The heavy modules loaded; `origins`: for each, the project's frames that first imported it."""

    origins: dict[str, list[str]]


# Records, for each heavy module, where the first import of it came from: when a check fails, the
# message says which line of the project loaded it (a two-worker CI run once saw `history` load
# PyYAML, which no single run has reproduced).
_WHO_IMPORTS = """
import sys, traceback
class _Who:
    def find_spec(self, name, path=None, target=None):
        if name in HEAVY and name not in ORIGINS:
            ORIGINS[name] = [f"{f.filename.rsplit('gitops_acp/', 1)[-1]}:{f.lineno} {f.name}"
                             for f in traceback.extract_stack() if "gitops_acp" in f.filename][-4:]
        return None
ORIGINS = {}
sys.meta_path.insert(0, _Who())
"""


def _loaded(repo: Path, *argv: str, heavy: tuple[str, ...] = HEAVY) -> _Loaded:
    """The heavy modules a one-object command loaded, run in a new process as a person runs it."""
    program = (
        f"HEAVY = {heavy!r}\n{_WHO_IMPORTS}\n"
        "import io, json, sys, contextlib\n"
        "from gitops_acp.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(sys.argv[1:])\n"
        f"print(json.dumps([code, [m for m in {heavy!r} if m in sys.modules], ORIGINS]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", program, "--repo", str(repo), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    code, names, origins = json.loads(proc.stdout)
    assert code == 0
    loaded = _Loaded(names)
    loaded.origins = origins
    return loaded


# Objects whose file on main is not read at all: the status file is all `get` and `describe` read.
WITHOUT_MAIN = (
    "archived child task",
    "archived tool call",
    "live tool call",
    "live task, file gone from main",
)


@pytest.mark.parametrize(
    ("role", "parses_main"),
    [
        # Its Task file on main declares it as its status copy holds it: compared as plain YAML.
        ("archived task, declared", False),
        ("archived child task", False),
        ("archived tool call", False),
        ("live task, declared", False),
        ("live tool call", False),
        ("live task, file gone from main", False),
        ("live task, edited on main since", True),  # main's spec differs: parsed, with the models
        ("declared, not run yet", True),
    ],
)
def test_one_object_loads_pydantic_and_gitpython_only_to_parse_main(
    world: World, role: str, parses_main: bool
) -> None:
    kind, name = world.objects[role]
    for command in ("get", "describe"):
        # Their plain command lines are read without argparse (cli/main.py), and what they show
        # is held in named tuples, not dataclasses (with `inspect`: ~8 ms of ~85)
        heavy = (*HEAVY, "argparse", "dataclasses", "inspect", "pathlib")
        loaded = _loaded(world.repo.path, command, str(kind), name, heavy=heavy)
        if parses_main:
            assert "pydantic" in loaded, command
            assert "asyncio" not in loaded, (command, loaded.origins)
        else:
            assert loaded == [], (command, loaded.origins)
        if role in WITHOUT_MAIN:  # status files in the emitter's style: read without PyYAML
            assert _loaded(world.repo.path, command, str(kind), name, heavy=("yaml",)) == [], command
    if role != "declared, not run yet":
        history = _loaded(world.repo.path, "history", str(kind), name, heavy=(*HEAVY, *NOT_FOR_HISTORY))
        assert history == [], history.origins


@pytest.mark.parametrize(
    ("kind", "flags"),
    [
        (Kind.Task, ()),
        (Kind.Task, ("--all",)),
        (Kind.Task, ("--limit", "2")),
        (Kind.ToolCall, ()),
        (Kind.Agent, ()),
    ],
)
def test_a_list_reads_without_gitpython_what_a_gitrepo_reads(
    world: World, kind: Kind, flags: tuple[str, ...]
) -> None:
    """`get KIND` lists through a `ReadOnlyRepo` (no GitPython: ~60 ms of a ~350 ms command): the
    same page as `listing` over a `GitRepo` (what the HTTP API reads through), and the same rows."""
    with GitRepo.open(world.repo.path) as repo:
        page = views.listing(
            repo,
            kind,
            lambda document: True,
            limit=2 if "--limit" in flags else None,
            archived="--all" in flags,
        )
    shown = cli("--repo", str(world.repo.path), "get", str(kind), *flags, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["items"] == page.documents
    assert page.documents  # something to compare
    assert (
        _loaded(world.repo.path, "get", str(kind), *flags, heavy=("git", "gitops_acp.store.git.repo")) == []
    )


def test_building_the_parsers_loads_no_command_s_dependencies() -> None:
    program = (
        "import sys\nfrom gitops_acp.cli.main import build_parser\nbuild_parser()\n"
        "print([m for m in sys.modules if m in ('yaml', *"
        f"{HEAVY!r}) or m.startswith('gitops_acp.store')])\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

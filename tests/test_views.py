"""`get KIND NAME` and `describe` read one object, not the repository (cli/views.lookup); lists page.

A real repository: resources on `main` (several files, one of them broken), status files committed
by the real StatusWriter (with the `acp.gitops.dev/source` annotations the reconciler stamps), a
tool call and a delegated task that exist only on the status branch, a task removed from `main`.
For every object, `lookup` must show exactly what the full `snapshot` shows, and (for an object
with a status) read no file of `main` but the one that declares it.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitops_acp.api.reading import Reads
from gitops_acp.cli import views
from gitops_acp.cli.commands import get
from gitops_acp.cli.main import main
from gitops_acp.controllers.cold import Facts
from gitops_acp.errors import UserError
from gitops_acp.reactor import coldfacts
from gitops_acp.resources import selectors
from gitops_acp.resources.meta import ANNOTATION_SOURCE, LABEL_PARENT_TOOLCALL, Kind, status_path
from gitops_acp.store import readers, recovery
from gitops_acp.store.git import GitRepo
from gitops_acp.store.status import Change, StatusWriter
from tests.conftest import commit_files, git

LLM = """apiVersion: acp.gitops.dev/v1alpha1
kind: LLM
metadata: {name: gpt}
spec: {provider: openai, apiKeyFrom: {secretKeyRef: {name: openai, key: KEY}}, parameters: {model: gpt-4o}}
"""
AGENT = """apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec: {llmRef: {name: gpt}, system: be brief}
"""


def task(name: str, message: str) -> str:
    return (
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\n"
        f"metadata: {{name: {name}}}\nspec: {{agentRef: {{name: helper}}, userMessage: {message!r}}}\n"
    )


def status_doc(
    kind: str, name: str, spec: dict[str, Any], status: dict[str, Any], **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": spec,
        "status": status,
    }


class Counting:
    """A GitRepo that counts the files read from `main`, the status files and whole-tree listings."""

    def __init__(self, repo: GitRepo, main: str) -> None:
        self._repo = repo
        self._main = main
        self.main_files: list[str] = []
        self.listings = 0  # of a whole commit
        self.blobs = 0  # read by sha
        self.status_files: list[str] = []  # read from the status branch (a list's page), by path or blob
        self.status_listings: list[str] = []  # directories of the status branch listed whole

    def read_file(self, commit: str, path: str) -> bytes | None:
        if commit == self._main:
            self.main_files.append(path)
        else:
            self.status_files.append(path)
        return self._repo.read_file(commit, path)

    def read_first_files(self, wanted: list[tuple[str, list[str]]]) -> list[tuple[int, bytes] | None]:
        found = self._repo.read_first_files(wanted)
        for (commit, paths), first in zip(wanted, found, strict=True):
            if first is not None:  # the file read (GitRepo asks for the others only until it finds one)
                (self.main_files if commit == self._main else self.status_files).append(paths[first[0]])
        return found

    def read_blobs(self, shas: list[str]) -> dict[str, bytes]:
        """A list reads its status files by blob (the names came with theirs): counted by path."""
        tip = self._repo.resolve("refs/heads/acp/status")
        paths = {blob: path for path, blob in self._repo.list_tree(tip).items()} if tip else {}
        self.status_files += [paths[sha] for sha in shas if sha in paths]
        return self._repo.read_blobs(shas)

    def list_tree(self, commit: str, path: str = "") -> dict[str, str]:
        self.listings += not path
        if path and commit != self._main:
            self.status_listings.append(path)
        return self._repo.list_tree(commit, path)

    def read_blob(self, sha: str) -> bytes:
        self.blobs += 1
        return self._repo.read_blob(sha)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


def commit_status(repo: Path, changes: list[Change]) -> None:
    """Commit `changes` to the status branch with the real StatusWriter, as of `main`'s tip."""

    async def write() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        await writer.commit(changes, spec_commit=git(repo, "rev-parse", "main"))
        await writer.close()

    asyncio.run(write())


@pytest.fixture
def world(repo: Path) -> Path:
    files = {"llms/gpt.yaml": LLM, "agents/helper.yaml": AGENT, "broken.yaml": "kind: [unclosed\n"}
    files |= {f"tasks/t{i}.yaml": task(f"t{i}", f"question {i}") for i in range(20)}
    commit_files(repo, files, "resources")
    commit_files(repo, {"tasks/gone.yaml": task("gone", "soon removed")}, "one more")
    git(repo, "rm", "-q", "tasks/gone.yaml")
    git(repo, "commit", "-q", "-m", "remove a task")

    def stamped(path: str) -> dict[str, Any]:
        return {"annotations": {ANNOTATION_SOURCE: path}}

    changes = [
        Change(
            Kind.LLM,
            "gpt",
            status_doc("LLM", "gpt", {"provider": "openai"}, {"ready": True}, **stamped("llms/gpt.yaml")),
        ),
        Change(
            Kind.Task,
            "t3",
            status_doc(
                "Task",
                "t3",
                {"agentRef": {"name": "helper"}},
                {"phase": "FinalAnswer", "output": "3"},
                **stamped("tasks/t3.yaml"),
            ),
        ),
        Change(  # exactly as the reconciler writes t5's declaration: the status copy is shown as is
            Kind.Task,
            "t5",
            status_doc(
                "Task",
                "t5",
                {"agentRef": {"name": "helper"}, "userMessage": "question 5"},
                {"phase": "FinalAnswer", "output": "5"},
                **stamped("tasks/t5.yaml"),
            ),
        ),
        Change(
            Kind.Task,
            "gone",
            status_doc(
                "Task",
                "gone",
                {"agentRef": {"name": "helper"}},
                {"phase": "Cancelled"},
                **stamped("tasks/gone.yaml"),
            ),
        ),
        Change(
            Kind.ToolCall,
            "t3-abc-tc-01",
            status_doc("ToolCall", "t3-abc-tc-01", {"toolRef": {"name": "x__y"}}, {"phase": "Succeeded"}),
        ),
        Change(
            Kind.Task,
            "delegate-t3-abc-tc-02",
            status_doc(
                "Task",
                "delegate-t3-abc-tc-02",
                {"agentRef": {"name": "helper"}, "userMessage": "sub"},
                {"phase": "FinalAnswer"},
                labels={LABEL_PARENT_TOOLCALL: "t3-abc-tc-02"},
            ),
        ),
    ]
    commit_status(repo, changes)
    return repo


KEYS = [
    (Kind.LLM, "gpt"),
    (Kind.Agent, "helper"),
    (Kind.Task, "t3"),
    (Kind.Task, "t5"),
    (Kind.Task, "t7"),
    (Kind.Task, "gone"),
    (Kind.ToolCall, "t3-abc-tc-01"),
    (Kind.Task, "delegate-t3-abc-tc-02"),
]


@pytest.mark.parametrize("key", KEYS, ids=[f"{k}/{n}" for k, n in KEYS])
def test_one_object_is_what_the_whole_snapshot_shows(world: Path, key: tuple[Kind, str]) -> None:
    with GitRepo.open(world) as repo:
        whole = views.snapshot(repo)
        found = views.lookup(repo, *key)
    assert found is not None
    assert found.document == whole.objects[key]
    assert found.branch == whole.branch_of(key)


@pytest.mark.parametrize(
    ("key", "reads"),
    [
        ((Kind.LLM, "gpt"), ["llms/gpt.yaml"]),
        ((Kind.Task, "t3"), ["tasks/t3.yaml"]),
        ((Kind.Task, "t5"), ["tasks/t5.yaml"]),
        ((Kind.Task, "gone"), ["tasks/gone.yaml"]),  # looked for where it was: gone, status as is
        ((Kind.ToolCall, "t3-abc-tc-01"), []),
        ((Kind.Task, "delegate-t3-abc-tc-02"), []),
    ],
)
def test_an_object_with_a_status_reads_only_its_own_file_of_main(
    world: Path, key: tuple[Kind, str], reads: list[str]
) -> None:
    with GitRepo.open(world) as opened:
        repo = Counting(opened, git(world, "rev-parse", "main"))
        assert views.lookup(repo, *key) is not None  # type: ignore[arg-type]
    assert repo.main_files == reads
    assert repo.listings == 0


WITHOUT_MODELS = """
import json, sys
from gitops_acp.cli import views
from gitops_acp.resources.meta import Kind
with views.open_reader(sys.argv[1]) as reader:
    found = views.lookup(reader, Kind(sys.argv[2]), sys.argv[3])
print(json.dumps({"spec": found.document["spec"], "models": "pydantic" in sys.modules}))
"""


@pytest.mark.parametrize(
    ("name", "message", "models"),
    [
        ("t5", "question 5", False),  # declared on main as its status copy holds it: read as it is
        ("t3", "question 3", True),  # the file says more than the status copy: parsed, main's spec shown
    ],
)
def test_a_declaration_as_reconciled_is_shown_without_parsing_it_into_a_model(
    world: Path, name: str, message: str, models: bool
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODELS, str(world), "Task", name],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(run.stdout)
    assert shown == {"spec": {"agentRef": {"name": "helper"}, "userMessage": message}, "models": models}


ONE_OBJECT = """
import sys
from gitops_acp.cli.main import main
sys.argv = ["gitops-acp", "--repo", *sys.argv[1:]]
code = main()
print("typing" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args", [["history", "task", "t5", "-n", "20"], ["get", "task", "t5"], ["describe", "task", "t5"]]
)
def test_a_command_on_one_object_does_not_import_typing(world: Path, args: list[str]) -> None:
    """A new process each time (DESIGN §9): `typing` is ~5% of a `history` (gitops_acp/tuples.py)."""
    run = subprocess.run(
        [sys.executable, "-c", ONE_OBJECT, str(world), *args], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip()  # it read and printed the object (or its history)
    assert run.stderr.strip() == "False"


def test_an_edit_on_main_after_the_last_checkpoint_is_shown(world: Path) -> None:
    commit_files(world, {"tasks/t5.yaml": task("t5", "question five, edited")}, "edit t5")
    with GitRepo.open(world) as repo:
        whole = views.snapshot(repo)
        found = views.lookup(repo, Kind.Task, "t5")
    assert found is not None
    assert found.document == whole.objects[(Kind.Task, "t5")]
    assert found.document["spec"]["userMessage"] == "question five, edited"
    assert found.document["status"]["output"] == "5"


def test_an_object_not_reconciled_yet_is_found_on_main_and_a_missing_one_is_none(world: Path) -> None:
    with GitRepo.open(world) as repo:
        found = views.lookup(repo, Kind.Task, "t7")
        assert views.lookup(repo, Kind.Task, "nowhere") is None
    assert found is not None
    assert found.document["spec"]["userMessage"] == "question 7"
    assert "status" not in found.document or not found.document["status"]


# -- lists: -l/--selector, --phase, --limit and --continue -------------------------------------


def names_shown(out: str) -> list[str]:
    return [line.split()[0] for line in out.strip().splitlines()[1:]]


def test_pages_of_a_list_follow_each_other_and_cover_everything_once(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with GitRepo.open(world) as repo:
        everything = views.snapshot(repo).of_kind(Kind.Task)
    seen: list[str] = []
    after: str | None = None
    for _ in range(20):
        assert get.show(str(world), "tasks", page=get.Page(limit=7, after=after)) == 0
        out, err = capsys.readouterr()
        page = names_shown(out)
        assert 1 <= len(page) <= 7
        seen += page
        if "more:" not in err:
            break
        after = err.split("--continue ")[1].split()[0]
        assert after == page[-1]
    assert seen == [doc["metadata"]["name"] for doc in everything]  # sorted, each once


@pytest.mark.parametrize("kind", list(Kind))
def test_a_list_is_what_the_whole_snapshot_shows(world: Path, kind: Kind) -> None:
    with GitRepo.open(world) as repo:
        whole = views.snapshot(repo).of_kind(kind)
        listed = views.listing(repo, kind, lambda doc: True)
    assert listed.documents == whole
    assert listed.next_after is None


@pytest.mark.parametrize(
    "files",
    [
        # declared twice: both files are in error (the assembly's rule), so neither counts
        {"tasks/twice.yaml": task("t4", "again")},
        # a file of ours whose YAML broke after declaring t4: t4 is in error everywhere
        {"tasks/cut.yaml": task("t4", "cut") + "---\nkind: [unclosed acp.gitops.dev\n"},
        # not valid for the models (an unknown field): not declared at all
        {"tasks/t6.yaml": task("t6", "six").replace("userMessage", "userMesage")},
        # the same for one with a status: its status copy is what shows
        {"tasks/t3.yaml": task("t3", "three").replace("userMessage", "userMesage")},
        # another kind under a Task's name, and someone else's Task
        {"x.yaml": "apiVersion: v1\nkind: Task\nmetadata: {name: zz}\n---\n" + AGENT.replace("helper", "t8")},
    ],
    ids=["declared twice", "broken file of ours", "invalid", "invalid, with a status", "not ours"],
)
def test_a_list_is_what_the_whole_snapshot_shows_when_main_is_odd(world: Path, files: dict[str, str]) -> None:
    """Lists read main's names without the models, and parse only what they show: where that cannot
    tell (a name declared twice, a broken file of ours), the whole of main is parsed as before."""
    commit_files(world, files, "something odd on main")
    for kind in (Kind.Task, Kind.Agent):
        with GitRepo.open(world) as repo:
            whole = views.snapshot(repo).of_kind(kind)
            listed = views.listing(repo, kind, lambda doc: True)
            paged = views.listing(repo, kind, lambda doc: True, limit=3)
        assert listed.documents == whole, kind
        assert paged.documents == whole[:3], kind


def test_a_list_of_objects_as_reconciled_imports_no_models(world: Path) -> None:
    """A page whose objects are declared on main as their status copies hold them is read without
    pydantic (~150 ms of a `get tasks`): main's files are read for their names only."""
    program = (
        "import sys\nfrom gitops_acp.store.git import ReadOnlyRepo\nfrom gitops_acp.store import readers\n"
        "from gitops_acp.resources.meta import Kind\n"
        f"with ReadOnlyRepo.open({str(world)!r}) as repo:\n"
        "    page = readers.listing(repo, Kind.Task, lambda doc: True, after='t4', limit=2)\n"
        "print([doc['metadata']['name'] for doc in page.documents], 'pydantic' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # t5 is declared exactly as reconciled; t6 (declared only) needs the models to be shown.
    assert proc.stdout.split() == ["['t5',", "'t6']", "True"]
    # With t6-t9 gone from main, t5 is the last name after t4: nothing needs the models.
    git(world, "rm", "-q", *(f"tasks/t{i}.yaml" for i in range(6, 10)))
    git(world, "commit", "-q", "-m", "remove four tasks")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['t5']", "False"]


def test_a_page_reads_only_the_status_files_it_shows(world: Path) -> None:
    with GitRepo.open(world) as opened:
        repo = Counting(opened, git(world, "rev-parse", "main"))
        # 20 tasks on main (one with status) and 2 only on the status branch; main's files are
        # parsed (its declarations), the status side is names until the page is full.
        page = views.listing(repo, Kind.Task, lambda doc: True, limit=2)  # type: ignore[arg-type]
    assert [doc["metadata"]["name"] for doc in page.documents] == ["delegate-t3-abc-tc-02", "gone"]
    assert page.next_after == "gone"
    # the two status files shown (t0, next, has none: declared on main only)
    assert repo.status_files == [
        status_path(Kind.Task, "delegate-t3-abc-tc-02"),
        status_path(Kind.Task, "gone"),
    ]


def test_a_long_list_reads_its_status_files_many_at_a_time(world: Path) -> None:
    """300 tool calls only on the status branch, a filter that keeps every third and pages of 40:
    each page and the whole list are what the snapshot shows, the files read in a few round
    trips (chunks of 64, doubling), not one each."""
    calls = [f"c{i:03d}" for i in range(300)]
    changes = [
        Change(
            Kind.ToolCall,
            name,
            status_doc(
                "ToolCall", name, {"toolRef": {"name": "x__y"}}, {"phase": ("Failed", "Succeeded")[i % 3 > 0]}
            ),
        )
        for i, name in enumerate(calls)
    ]
    commit_status(world, changes)

    def failed(doc: dict[str, Any]) -> bool:
        return doc["status"]["phase"] == "Failed"

    class Trips(Counting):
        trips = 0

        def read_first_files(self, wanted: list[tuple[str, list[str]]]) -> list[tuple[int, bytes] | None]:
            self.trips += 1
            return super().read_first_files(wanted)

        def read_blobs(self, shas: list[str]) -> dict[str, bytes]:
            self.trips += 1
            return super().read_blobs(shas)

    with GitRepo.open(world) as opened:
        expected = [doc for doc in views.snapshot(opened).of_kind(Kind.ToolCall) if failed(doc)]
        # by blob (a command's list: the names came with theirs), and by path (the HTTP API's
        # names, kept without them)
        for names in (None, readers.StatusNames()):
            repo = Trips(opened, git(world, "rev-parse", "main"))
            whole = readers.listing(repo, Kind.ToolCall, failed, names=names)  # type: ignore[arg-type]
            assert whole.documents == expected
            assert whole.next_after is None
            assert len(repo.status_files) == 301  # each file once (and the tool call of the world)
            assert repo.trips == 3  # 64 names, 128, then the last 109 (one each: 301)
            # A small page through a filter that keeps only the last: it reads on in chunks that
            # grow with what it refused (6, 6, 12, 24, 48, 96, 109), not the page's size each time.
            repo = Trips(opened, git(world, "rev-parse", "main"))
            last = readers.listing(
                repo,  # type: ignore[arg-type]
                Kind.ToolCall,
                lambda doc: doc["metadata"]["name"] == "c299",
                limit=5,
                names=names,
            )
            assert [doc["metadata"]["name"] for doc in last.documents] == ["c299"]
            assert len(repo.status_files) == 301
            assert repo.trips == 7
        pages: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = views.listing(opened, Kind.ToolCall, failed, limit=40, after=after)
            pages += page.documents
            if page.next_after is None:
                break
            assert len(page.documents) == 40
            after = page.next_after
    assert len(expected) == 100
    assert pages == expected


def test_a_name_search_reads_only_the_status_files_of_the_names_it_keeps(world: Path) -> None:
    from gitops_acp.store import readers
    from gitops_acp.store.desired import DesiredReader

    main = git(world, "rev-parse", "main")
    with GitRepo.open(world) as opened:
        desired = DesiredReader(opened)
        desired.read(main)  # warm, as the HTTP API's long-lived reader is: main is parsed already
        everything = readers.listing(opened, Kind.Task, lambda doc: True, desired=desired)
        repo = Counting(opened, main)
        pages: list[list[str]] = []
        after: str | None = None
        for _ in range(5):
            page = readers.listing(
                repo,  # type: ignore[arg-type]
                Kind.Task,
                lambda doc: True,
                limit=1,
                after=after,
                desired=desired,
                named=lambda name: "t3" in name,
            )
            pages.append([doc["metadata"]["name"] for doc in page.documents])
            after = page.next_after
            if after is None:
                break
    # Paged through, the search is the whole list narrowed by name; t3 comes after t0, t1, ... .
    wanted = [doc["metadata"]["name"] for doc in everything.documents if "t3" in doc["metadata"]["name"]]
    assert wanted == ["delegate-t3-abc-tc-02", "t3"]
    assert pages == [["delegate-t3-abc-tc-02"], ["t3"]]
    # Each page read its own status file and the next match's (to know there is a next page), no
    # other task's: not gone's, the one other task with a status file.
    assert len(repo.status_files) == 3
    assert {Path(path).stem for path in repo.status_files} == {"delegate-t3-abc-tc-02", "t3"}
    assert repo.main_files == []


@pytest.mark.parametrize("blobs", [False, True], ids=["names", "names-and-blobs"])
def test_names_kept_from_tip_to_tip_list_what_a_fresh_listing_lists(world: Path, blobs: bool) -> None:
    """The HTTP API's lists keep the status files' names and bring them to each new tip with the
    files that changed: new tasks, a deleted one, an archived one, a tip moved back, a tip that
    is gone. Each time, every kind's list, with and without the archive, is a fresh listing's."""
    from gitops_acp.store import readers
    from gitops_acp.store.desired import DesiredReader

    names = readers.StatusNames(blobs=blobs)
    main = git(world, "rev-parse", "main")

    def same_as_fresh() -> list[str]:
        with GitRepo.open(world) as opened:
            desired = DesiredReader(opened)
            repo = Counting(opened, main)
            for kind in (Kind.Task, Kind.ToolCall, Kind.LLM):
                for archived in (False, True):
                    kept = readers.listing(
                        repo,  # type: ignore[arg-type]
                        kind,
                        lambda doc: True,
                        archived=archived,
                        desired=desired,
                        names=names,
                    )
                    fresh = readers.listing(opened, kind, lambda doc: True, archived=archived)
                    assert kept == fresh, (kind, archived)
        return repo.status_listings  # by the kept lists only

    def task_status(name: str, phase: str) -> Change:
        return Change(
            Kind.Task, name, status_doc("Task", name, {"agentRef": {"name": "helper"}}, {"phase": phase})
        )

    listed = ["status/tasks", "archive/tasks", "status/toolcalls", "archive/toolcalls", "status/llms"]
    assert same_as_fresh() == listed  # each directory listed once: the names kept from then on
    first = git(world, "rev-parse", "acp/status")
    commit_status(
        world, [task_status(f"new-{i}", "Initializing") for i in range(3)] + [task_status("t3", "Failed")]
    )
    assert same_as_fresh() == []
    commit_status(world, [Change(Kind.Task, "new-1", None), Change(Kind.ToolCall, "t3-abc-tc-01", None)])
    assert same_as_fresh() == []
    archive = [Change(Kind.Task, "gone", None, archive=True), Change(Kind.Task, "new-2", None, archive=True)]
    commit_status(world, archive)
    assert same_as_fresh() == []
    git(world, "update-ref", "refs/heads/acp/status", first)  # moved back: what the diff undoes
    assert same_as_fresh() == []
    # A tip the names were kept at that no longer exists (a branch reset, then pruned): listed again.
    for held in names._held.values():
        held.tip = "0" * 40
    assert same_as_fresh() == listed


def test_phase_and_selector_narrow_a_list(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    get.show(str(world), "tasks", page=get.Page(phase="FinalAnswer"))
    assert names_shown(capsys.readouterr().out) == ["delegate-t3-abc-tc-02", "t3", "t5"]
    get.show(str(world), "tasks", page=get.Page(selector=selectors.parse(f"{LABEL_PARENT_TOOLCALL}")))
    assert names_shown(capsys.readouterr().out) == ["delegate-t3-abc-tc-02"]
    get.show(
        str(world), "tasks", page=get.Page(selector=selectors.parse(f"!{LABEL_PARENT_TOOLCALL}"), limit=2)
    )
    out, err = capsys.readouterr()
    assert names_shown(out) == ["gone", "t0"]
    assert "--continue t0" in err
    get.show(str(world), "tasks", output="json", page=get.Page(limit=1))
    listed = json.loads(capsys.readouterr().out)
    assert listed["metadata"] == {"continue": listed["items"][0]["metadata"]["name"]}


def task_blobs(repo: Path) -> dict[str, str]:
    """The blob of each task's status file at the status branch's tip, by task name."""
    with GitRepo.open(repo) as opened:
        tip = opened.resolve("refs/heads/acp/status")
        assert tip is not None
        return {
            path.rsplit("/", 1)[1].removesuffix(".yaml"): sha
            for path, sha in opened.list_tree(tip).items()
            if path.startswith("status/tasks/")
        }


def test_a_phase_list_reads_no_file_whose_saved_phase_is_another(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`get --phase` asks the facts the reconciler saved by blob (reactor/coldfacts.py) before
    reading a file, once the list has refused a first chunk of files: a finished task saved in
    another phase is then not read, and the list is the same. A list whose phase most files are in
    never asks."""
    done = [f"done-{i:02d}" for i in range(80)]
    commit_status(
        world,
        [
            Change(
                Kind.Task,
                name,
                status_doc("Task", name, {"agentRef": {"name": "helper"}}, {"phase": "FinalAnswer"}),
            )
            for name in done
        ],
    )
    blobs = task_blobs(world)
    with GitRepo.open(world) as repo:

        def listed(phase: str) -> tuple[list[str], list[str]]:
            """What the list shows and which status files it read: the same whether its names came
            with their blobs (a command's) or not (the HTTP API's, kept between answers)."""
            found = []
            for names in (readers.StatusNames(blobs=True), readers.StatusNames()):
                page = get.Page(phase=phase)
                counting = Counting(repo, repo.resolve("refs/heads/main") or "")
                skip = page.unread(counting, Kind.Task)
                shown = readers.listing(counting, Kind.Task, page.accepts, names=names, skip=skip)
                read = sorted(path.rsplit("/", 1)[1].removesuffix(".yaml") for path in counting.status_files)
                found.append(([document["metadata"]["name"] for document in shown.documents], read))
                # with the archive's names too (`--all`): the same objects (there are none archived)
                every = readers.listing(
                    counting, Kind.Task, page.accepts, names=names, skip=skip, archived=True
                )
                assert every.documents == shown.documents
            assert found[0] == found[1]
            return found[0]

        every = sorted(blobs)  # the tasks with a status file: each read without saved facts
        answered = ["delegate-t3-abc-tc-02", *done, "t3", "t5"]
        before = {phase: listed(phase) for phase in ("FinalAnswer", "Cancelled", "Failed")}
        assert before == {
            "FinalAnswer": (answered, every),
            "Cancelled": (["gone"], every),
            "Failed": ([], every),
        }
        saved = [  # what a serve saved: every finished task but t5 (finished since its last save)
            (
                bytes.fromhex(blob),
                Facts("Cancelled" if name == "gone" else "FinalAnswer", True, None, None, None, True),
            )
            for name, blob in blobs.items()
            if name != "t5"
        ]
        folder = recovery.lock_dir(repo.common_dir)  # where serve keeps its lock and its facts
        folder.mkdir()
        coldfacts.save(coldfacts.path_for(folder, "acp/status"), saved)
        # The first chunk (64 names, in name order, the Tasks on main without a status among them)
        # is read as it comes; from then on only the files in that phase or without saved facts.
        first = sorted({*blobs, *(f"t{i}" for i in range(20))})[:64]
        assert {phase: listed(phase) for phase in before} == {
            "FinalAnswer": (answered, every),  # nothing refused: the facts are not even asked
            "Cancelled": (["gone"], sorted({*(n for n in first if n in blobs), "gone", "t5"})),
            "Failed": ([], sorted({*(n for n in first if n in blobs), "t5"})),
        }
    for phase, (names, _) in before.items():  # and the command shows the same
        get.show(str(world), "tasks", page=get.Page(phase=phase))
        assert names_shown(capsys.readouterr().out) == names


def test_a_list_of_archived_tasks_by_phase_reads_no_file_archived_in_another_phase(world: Path) -> None:
    """`get --all --phase` and the HTTP API's lists with archived ones: the reconciler appends the
    phase of each file it archives (`coldfacts.append_archived`) and a list reads no archived file
    whose phase there is another; without that file, or past a line a kill cut short, it reads
    them as before, and shows the same."""
    done = [f"done-{i:03d}" for i in range(100)]
    failed = [f"zz-failed-{i}" for i in range(5)]  # last in name order: past the first chunk
    changes = [
        Change(
            Kind.Task,
            name,
            status_doc(
                "Task",
                name,
                {"agentRef": {"name": "helper"}},
                {"phase": "Failed" if name in failed else "FinalAnswer"},
            ),
        )
        for name in done + failed
    ]
    commit_status(world, changes)
    commit_status(
        world,
        [Change(Kind.Task, name, None, "FinalAnswer", "Archived", archive=True) for name in done + failed],
    )
    with GitRepo.open(world) as repo:
        tip = repo.resolve("refs/heads/acp/status")
        assert tip is not None
        archived = {
            path.rsplit("/", 1)[1].removesuffix(".yaml"): sha
            for path, sha in repo.list_tree(tip).items()
            if path.startswith("archive/tasks/")
        }
        assert sorted(archived) == done + failed

        def listed() -> tuple[list[str], set[str]]:
            """The failed tasks shown, archived ones included, and which archived files were read:
            the same whether the names came with their blobs (a command's) or not (the API's)."""
            found = []
            for names in (readers.StatusNames(blobs=True), readers.StatusNames()):
                page = get.Page(phase="Failed")
                counting = Counting(repo, repo.resolve("refs/heads/main") or "")
                shown = readers.listing(
                    counting,
                    Kind.Task,
                    page.accepts,
                    names=names,
                    skip=page.unread(counting, Kind.Task),
                    archived=True,
                )
                read = {
                    path.rsplit("/", 1)[1].removesuffix(".yaml")
                    for path in counting.status_files
                    if path.startswith("archive/")
                }
                found.append(([document["metadata"]["name"] for document in shown.documents], read))
            assert found[0] == found[1]
            return found[0]

        assert listed() == (failed, set(archived))  # nothing kept: every archived file is read
        folder = recovery.lock_dir(repo.common_dir)
        folder.mkdir()
        path = coldfacts.archived_path_for(folder, "acp/status")
        phase = {name: "Failed" if name in failed else "FinalAnswer" for name in archived}
        coldfacts.append_archived(path, [(archived[name], phase[name]) for name in done[:50]])
        coldfacts.append_archived(path, [(archived[name], phase[name]) for name in done[50:] + failed])
        shown, read = listed()
        assert shown == failed
        # The first chunk's archived files (64 names in name order, the live ones and t0-t19 on
        # main among them), then only the failed ones: the other done-* are left unread.
        first = sorted({*archived, *task_blobs(world), *(f"t{i}" for i in range(20))})[:64]
        assert read == {*(name for name in first if name in archived), *failed}
        assert "done-099" not in read
        # A kill cut the last append short: the whole lines are still used, the cut one is not.
        with open(path, "ab") as out:
            out.write(archived[done[-1]].encode()[:17])
        assert listed() == (shown, read)
        coldfacts.append_archived(path, [(archived[failed[0]], "Failed")])  # ends the cut line first
        assert coldfacts.archived_phases(path)[archived[failed[0]]] == "Failed"
        assert len(coldfacts.archived_phases(path)) == len(archived)
        path.write_bytes(b"something else\n" + path.read_bytes())  # another format: not used
        assert listed() == (failed, set(archived))


def test_the_apis_lists_read_the_saved_phases_again_only_when_saved_again(world: Path) -> None:
    """The HTTP API's lists ask the same saved phases (`api/reading.Reads.saved_phases`), kept
    between answers and read again when a save (or an archive commit's append) changed a file;
    its answers are the same."""
    reads = Reads(world, branch="main")

    def cancelled(reads: Reads) -> list[str]:
        page = reads.page(
            Kind.Task,
            get.Page(phase="Cancelled").accepts,
            limit=10,
            after=None,
            archived=False,
            phase="Cancelled",
        )
        return [document["metadata"]["name"] for document in page.documents]

    async def scenario() -> None:
        try:
            assert await reads.run(lambda reads: reads.saved_phases()) == {}
            assert await reads.run(cancelled) == ["gone"]
            blobs = task_blobs(world)
            path = coldfacts.path_for(recovery.lock_dir(world / ".git"), "acp/status")
            path.parent.mkdir()
            coldfacts.save(
                path, [(bytes.fromhex(blobs["gone"]), Facts("Cancelled", True, None, None, None, True))]
            )
            assert await reads.run(lambda reads: reads.saved_phases()) == {blobs["gone"]: "Cancelled"}
            kept = await reads.run(lambda reads: reads.saved_phases())
            assert await reads.run(lambda reads: reads.saved_phases()) is kept  # not read again
            coldfacts.save(
                path, [(bytes.fromhex(blobs["t3"]), Facts("FinalAnswer", True, None, None, None, True))]
            )
            assert await reads.run(lambda reads: reads.saved_phases()) == {blobs["t3"]: "FinalAnswer"}
            assert await reads.run(cancelled) == ["gone"]
            # An archive commit's append (coldfacts.append_archived) is read too.
            archived = coldfacts.archived_path_for(path.parent, "acp/status")
            coldfacts.append_archived(archived, [("ab" * 20, "Failed")])
            assert await reads.run(lambda reads: reads.saved_phases()) == {
                blobs["t3"]: "FinalAnswer",
                "ab" * 20: "Failed",
            }
            coldfacts.append_archived(archived, [("cd" * 20, "FinalAnswer")])
            assert (await reads.run(lambda reads: reads.saved_phases()))["cd" * 20] == "FinalAnswer"
        finally:
            await reads.aclose()

    asyncio.run(scenario())


def test_get_search_narrows_by_name_with_the_other_options(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(world), "get", "tasks", "--search", "T1"]) == 0
    assert names_shown(capsys.readouterr().out) == ["t1", *[f"t{i}" for i in range(10, 20)]]
    assert main(["--repo", str(world), "get", "tasks", "--search", "t3", "--phase", "FinalAnswer"]) == 0
    assert names_shown(capsys.readouterr().out) == ["delegate-t3-abc-tc-02", "t3"]
    assert main(["--repo", str(world), "get", "tasks", "--search", "t1", "--limit", "2"]) == 0
    out, err = capsys.readouterr()
    assert names_shown(out) == ["t1", "t10"]
    assert "--continue t10" in err
    args = ["--repo", str(world), "get", "tasks", "--search", "t1", "--limit", "2", "--continue", "t10"]
    assert main(args) == 0
    assert names_shown(capsys.readouterr().out) == ["t11", "t12"]
    assert main(["--repo", str(world), "get", "tasks", "--search", "nothing"]) == 0
    assert capsys.readouterr().out.strip() == "No Task resources found."


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (get.Page(phase="Done"), "--phase Done: not a Task phase; use one of Pending, "),
        (get.Page(limit=0), "--limit must be at least 1"),
        (get.Page(search="t" * 201), "--search: 201 characters; expected at most 200 (a part of a name)"),
    ],
)
def test_bad_list_options_are_one_line_errors(world: Path, page: get.Page, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        get.show(str(world), "tasks", page=page)


def test_a_phase_of_a_kind_without_phases_is_refused(world: Path) -> None:
    with pytest.raises(UserError, match="LLM has no phases"):
        get.show(str(world), "llms", page=get.Page(phase="Ready"))


@pytest.mark.parametrize(
    ("text", "labels", "selected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {}, True),  # absent counts as different, as in Kubernetes
        ("app!=web,tier", {"app": "db", "tier": "x"}, True),
        ("tier", {"app": "db"}, False),
        ("!tier", {"app": "db"}, True),
        ("acp.gitops.dev/task=t1", {"acp.gitops.dev/task": "t1"}, True),
    ],
)
def test_label_selectors_as_kubectl_reads_them(text: str, labels: dict[str, str], selected: bool) -> None:
    assert selectors.parse(text).matches(labels) is selected


@pytest.mark.parametrize("text", ["app in (a,b)", "a=,", "bad key=1", "a=b c"])
def test_selectors_that_cannot_be_read_say_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        selectors.parse(text)


def test_list_options_with_a_name_are_refused_by_the_command_line(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(world), "get", "tasks", "t3", "--limit", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --selector, --phase, --search, --limit, --continue and --all list many objects: "
        "leave out NAME"
    )
    assert main(["--repo", str(world), "get", "tasks", "-l", "app in (a)"]) == 1
    assert "set-based requirements" in capsys.readouterr().err


# -- history walks back only to the resource's first checkpoint ---------------------------------


def test_history_of_a_resource_is_the_same_bounded_by_its_first_checkpoint(repo: Path) -> None:
    """Years of other checkpoints before a task's first one are not walked, and nothing is lost."""
    from gitops_acp.controllers.state import State
    from gitops_acp.resources.meta import ANNOTATION_FIRST_CHECKPOINT
    from gitops_acp.resources.models import from_document
    from gitops_acp.store import history
    from gitops_acp.store.statustree import read_status_file

    commit_files(
        repo, {"llms/gpt.yaml": LLM, "agents/helper.yaml": AGENT, "tasks/late.yaml": task("late", "hi")}
    )
    clock = [1_700_000_000.0]

    async def scenario() -> None:
        writer = StatusWriter(repo, clock=lambda: clock[0])
        await writer.start()

        async def commit(changes: Any, spec_commit: str) -> str | None:
            return await writer.commit(changes, spec_commit=spec_commit)

        state = State(commit, clock=lambda: clock[0])
        for i in range(30):  # an old history: another task, checkpoint after checkpoint, a day ago
            doc = status_doc(
                "Task",
                "early",
                {"agentRef": {"name": "helper"}, "userMessage": "old"},
                {"phase": "ReadyForLLM", "turns": i},
            )
            await state.checkpoint(from_document(doc))
        clock[0] += 86_400
        for phase in ("Pending", "ReadyForLLM", "FinalAnswer"):
            clock[0] += 1
            doc = status_doc(
                "Task", "late", {"agentRef": {"name": "helper"}, "userMessage": "hi"}, {"phase": phase}
            )
            await state.checkpoint(from_document(doc))
        await writer.close()

    asyncio.run(scenario())
    with GitRepo.open(repo) as opened:
        late = views.lookup(opened, Kind.Task, "late")
        assert late is not None
        first = late.document["metadata"]["annotations"][ANNOTATION_FIRST_CHECKPOINT]
        assert first == "2023-11-15T22:13:21.000000Z"  # stamped at the first checkpoint, kept since
        bounded = history.events(opened, kind="Task", name="late", n=20)
        whole = [
            c.sha for c in opened.log("refs/heads/acp/status", path=status_path(Kind.Task, "late"), n=20)
        ]
        # The bound really is applied: the old task's commits are older than it.
        tip = opened.resolve("refs/heads/acp/status")
        assert tip is not None
        since = history._first_checkpoint(read_status_file(opened, tip, Kind.Task, "late"))
        assert since is not None
        early = status_path(Kind.Task, "early")
        assert not opened.log("refs/heads/acp/status", path=early, n=20, since=since)
    assert [e.sha for e in bounded] == whole
    assert [e.new_phase for e in reversed(bounded)] == ["Pending", "ReadyForLLM", "FinalAnswer"]

"""store/followups.py: the Task file a follow-up writes, and when one is refused (DESIGN §12)."""

from __future__ import annotations

import pytest
import yaml

from gitops_acp.errors import UserError
from gitops_acp.resources.loader import load_file
from gitops_acp.store import followups

TASK = b"""# a comment people wrote
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata: {name: t}
spec:
  agentRef: {name: a}
  userMessage: "first: a question"
"""


def test_a_follow_up_is_appended_and_the_file_stays_a_valid_task() -> None:
    once = followups.appended("tasks/t.yaml", TASK, "t", "second\nline")
    twice = followups.appended("tasks/t.yaml", once, "t", "third")
    spec = yaml.safe_load(twice)["spec"]
    assert spec["userMessage"] == "first: a question"
    assert spec["followUps"] == [{"content": "second\nline"}, {"content": "third"}]
    result = load_file("tasks/t.yaml", twice)
    assert not result.errors, [str(e) for e in result.errors]


@pytest.mark.parametrize(
    ("data", "content", "says"),
    [
        (TASK, "   ", "needs content"),
        (TASK + b"---\nkind: Agent\nmetadata: {name: a}\n", "x", "with other documents"),
        (b"spec: [1\n", "x", "invalid YAML"),
        (TASK.replace(b"  userMessage", b"  followUps: nope\n  userMessage"), "x", "not a list"),
    ],
)
def test_bad_files_and_empty_messages_are_one_line_refusals(data: bytes, content: str, says: str) -> None:
    with pytest.raises(UserError) as caught:
        followups.appended("tasks/t.yaml", data, "t", content)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("phase", "archived", "says"),
    [
        ("Failed", False, 'Task "t" is Failed'),
        ("Cancelled", False, 'Task "t" is Cancelled'),
        ("FinalAnswer", True, 'Task "t" was archived'),
        ("FinalAnswer", False, None),
        ("ReadyForLLM", False, None),  # running: the follow-up waits for the answer
        (None, False, None),  # not started yet
    ],
)
def test_only_a_task_that_can_answer_again_takes_a_follow_up(phase, archived, says) -> None:
    observed = {"status": {"phase": phase}} if phase else None
    why = followups.refusal("t", observed, archived=archived)
    if says is None:
        assert why is None
    else:
        assert why is not None
        assert why.startswith(says)
        assert "--fork-from t" in why

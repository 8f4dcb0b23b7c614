"""GitHub's REST objects as the fake forge answers them: every field GitHub's OpenAPI description requires.

Names follow the description's components (`simple-user`, `repository`, `full-repository`,
`pull-request`, `pull-request-review`, `issue-comment`, `label`); tests/fakes/openapi.py checks
the fake's answers against it, and tests/test_forge_sdks.py reads them with `githubkit`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["comment", "full_repository", "label", "pull_request", "review", "simple_user"]

STAMP = "2026-01-01T00:00:00Z"
_REPO_URLS = (
    "archive_url:/{archive_format}{/ref}",
    "assignees_url:/assignees{/user}",
    "blobs_url:/git/blobs{/sha}",
    "branches_url:/branches{/branch}",
    "collaborators_url:/collaborators{/collaborator}",
    "comments_url:/comments{/number}",
    "commits_url:/commits{/sha}",
    "compare_url:/compare/{base}...{head}",
    "contents_url:/contents/{+path}",
    "contributors_url:/contributors",
    "deployments_url:/deployments",
    "downloads_url:/downloads",
    "events_url:/events",
    "forks_url:/forks",
    "git_commits_url:/git/commits{/sha}",
    "git_refs_url:/git/refs{/sha}",
    "git_tags_url:/git/tags{/sha}",
    "hooks_url:/hooks",
    "issue_comment_url:/issues/comments{/number}",
    "issue_events_url:/issues/events{/number}",
    "issues_url:/issues{/number}",
    "keys_url:/keys{/key_id}",
    "labels_url:/labels{/name}",
    "languages_url:/languages",
    "merges_url:/merges",
    "milestones_url:/milestones{/number}",
    "notifications_url:/notifications{?since,all,participating}",
    "pulls_url:/pulls{/number}",
    "releases_url:/releases{/id}",
    "stargazers_url:/stargazers",
    "statuses_url:/statuses/{sha}",
    "subscribers_url:/subscribers",
    "subscription_url:/subscription",
    "tags_url:/tags",
    "teams_url:/teams",
    "trees_url:/git/trees{/sha}",
)


def simple_user(api: str, web: str, login: str, user_id: int) -> dict[str, Any]:
    """`simple-user`."""
    url = f"{api}/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": f"U_{user_id}",
        "avatar_url": f"{web}/avatars/{login}",
        "gravatar_id": "",
        "url": url,
        "html_url": f"{web}/{login}",
        "followers_url": f"{url}/followers",
        "following_url": f"{url}/following{{/other_user}}",
        "gists_url": f"{url}/gists{{/gist_id}}",
        "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{url}/subscriptions",
        "organizations_url": f"{url}/orgs",
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events{{/privacy}}",
        "received_events_url": f"{url}/received_events",
        "type": "User",
        "site_admin": False,
    }


def repository(api: str, web: str, full_name: str, owner: dict[str, Any]) -> dict[str, Any]:
    """`repository` (a pull request's head and base carry one)."""
    url = f"{api}/repos/{full_name}"
    data: dict[str, Any] = {
        "id": 1296269,
        "node_id": "R_1296269",
        "name": full_name.rsplit("/", 1)[-1],
        "full_name": full_name,
        "owner": owner,
        "private": True,
        "html_url": f"{web}/{full_name}",
        "description": None,
        "fork": False,
        "url": url,
        **{name: url + suffix for name, _, suffix in (entry.partition(":") for entry in _REPO_URLS)},
        "clone_url": f"{web}/{full_name}.git",
        "git_url": f"git://{web.split('://', 1)[-1]}/{full_name}.git",
        "ssh_url": f"git@example.invalid:{full_name}.git",
        "svn_url": f"{web}/{full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": None,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "size": 1,
        "default_branch": "main",
        "open_issues": 0,
        "open_issues_count": 0,
        "has_issues": True,
        "has_projects": False,
        "has_wiki": False,
        "has_pages": False,
        "has_downloads": False,
        "has_discussions": False,
        "archived": False,
        "disabled": False,
        "license": None,
        "pushed_at": STAMP,
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    return data


def full_repository(api: str, web: str, full_name: str, owner: dict[str, Any]) -> dict[str, Any]:
    """`full-repository`: GET /repos/{owner}/{repo}."""
    return {**repository(api, web, full_name, owner), "network_count": 0, "subscribers_count": 0}


def label(api: str, full_name: str, name: str, label_id: int) -> dict[str, Any]:
    """`label`."""
    return {
        "id": label_id,
        "node_id": f"LA_{label_id}",
        "url": f"{api}/repos/{full_name}/labels/{name}",
        "name": name,
        # GitHub sends null for a label without a description, but pull-request-simple's inline
        # label schema says string: a label with a description satisfies every schema.
        "description": f"{name} (fake forge)",
        "color": "ededed",
        "default": False,
        "archived_by": None,  # newer descriptions (githubkit's) require it; null: not archived
    }


def pull_request(
    api: str,
    web: str,
    full_name: str,
    *,
    number: int,
    title: str,
    body: str,
    state: str,  # open | closed | merged
    head: tuple[str, str],  # (ref, sha)
    base: tuple[str, str],
    author: dict[str, Any],
    merged_by: dict[str, Any] | None,
    merge_commit: str | None,
    labels: list[dict[str, Any]],
    reviewers: list[dict[str, Any]],
    full: bool = True,
) -> dict[str, Any]:
    """`pull-request` (GET/POST/PATCH of one), or `pull-request-simple` (lists) with `full=False`."""
    url = f"{api}/repos/{full_name}/pulls/{number}"
    issue = f"{api}/repos/{full_name}/issues/{number}"
    html = f"{web}/{full_name}/pull/{number}"
    repo = repository(api, web, full_name, author)

    def branch(ref: str, sha: str) -> dict[str, Any]:
        owner = full_name.split("/", 1)[0]
        return {"label": f"{owner}:{ref}", "ref": ref, "sha": sha, "user": author, "repo": repo}

    closed = state != "open"
    data: dict[str, Any] = {
        "url": url,
        "id": 1000 + number,
        "node_id": f"PR_{number}",
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue,
        "commits_url": f"{url}/commits",
        "review_comments_url": f"{url}/comments",
        "review_comment_url": f"{api}/repos/{full_name}/pulls/comments{{/number}}",
        "comments_url": f"{issue}/comments",
        "statuses_url": f"{api}/repos/{full_name}/statuses/{head[1]}",
        "number": number,
        "state": "closed" if closed else "open",
        "locked": False,
        "title": title,
        "user": author,
        "body": body,
        "labels": labels,
        "milestone": None,
        "active_lock_reason": None,
        "created_at": STAMP,
        "updated_at": STAMP,
        "closed_at": STAMP if closed else None,
        "merged_at": STAMP if state == "merged" else None,
        "merge_commit_sha": merge_commit,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": reviewers,
        "requested_teams": [],
        "head": branch(*head),
        "base": branch(*base),
        "_links": {
            "self": {"href": url},
            "html": {"href": html},
            "issue": {"href": issue},
            "comments": {"href": f"{issue}/comments"},
            "review_comments": {"href": f"{url}/comments"},
            "review_comment": {"href": f"{api}/repos/{full_name}/pulls/comments{{/number}}"},
            "commits": {"href": f"{url}/commits"},
            "statuses": {"href": f"{api}/repos/{full_name}/statuses/{head[1]}"},
        },
        "author_association": "OWNER",
        "auto_merge": None,
        "draft": False,
    }
    if full:
        data.update(
            {
                "merged": state == "merged",
                "mergeable": None if closed else True,
                "rebaseable": None if closed else True,
                "mergeable_state": "clean" if not closed else "unknown",
                "merged_by": merged_by,
                "comments": 0,
                "review_comments": 0,
                "maintainer_can_modify": False,
                "commits": 1,
                "additions": 1,
                "deletions": 0,
                "changed_files": 1,
            }
        )
    return data


def review(
    api: str,
    web: str,
    full_name: str,
    *,
    number: int,
    review_id: int,
    user: dict[str, Any],
    state: str,
    sha: str,
) -> dict[str, Any]:
    """`pull-request-review`."""
    html = f"{web}/{full_name}/pull/{number}#pullrequestreview-{review_id}"
    pull = f"{api}/repos/{full_name}/pulls/{number}"
    return {
        "id": review_id,
        "node_id": f"PRR_{review_id}",
        "user": user,
        "body": "",
        "state": state,
        "html_url": html,
        "pull_request_url": pull,
        "_links": {"html": {"href": html}, "pull_request": {"href": pull}},
        "submitted_at": STAMP,
        "commit_id": sha,
        "author_association": "COLLABORATOR",
    }


def comment(
    api: str, web: str, full_name: str, *, number: int, comment_id: int, user: dict[str, Any], body: str
) -> dict[str, Any]:
    """`issue-comment`."""
    return {
        "id": comment_id,
        "node_id": f"IC_{comment_id}",
        "url": f"{api}/repos/{full_name}/issues/comments/{comment_id}",
        "html_url": f"{web}/{full_name}/pull/{number}#issuecomment-{comment_id}",
        "body": body,
        "user": user,
        "created_at": STAMP,
        "updated_at": STAMP,
        "issue_url": f"{api}/repos/{full_name}/issues/{number}",
        "author_association": "OWNER",
    }

"""gitops_acp/tuples.py: `typing.NamedTuple`'s class syntax, as `typing` makes it."""

from __future__ import annotations

import pickle
from typing import NamedTuple as TypingNamedTuple

import pytest

from gitops_acp.tuples import NamedTuple


class Light(NamedTuple):
    """A light one."""

    sha: str
    detail: str = ""
    count: int = 0

    def shown(self) -> str:
        return f"{self.sha}: {self.detail}"


class Typed(TypingNamedTuple):
    """A typing one."""

    sha: str
    detail: str = ""
    count: int = 0


def test_it_is_a_named_tuple_as_typing_makes_one() -> None:
    light, typed = Light("abc", "x"), Typed("abc", "x")
    assert light == typed == ("abc", "x", 0)
    assert light._fields == typed._fields == ("sha", "detail", "count")
    assert light._field_defaults == typed._field_defaults
    assert light._replace(count=2) == ("abc", "x", 2)
    assert light._asdict() == typed._asdict()
    assert repr(light) == "Light(sha='abc', detail='x', count=0)"
    sha, detail, count = light
    assert (sha, detail, count) == ("abc", "x", 0)
    assert light.shown() == "abc: x"
    assert Light.__doc__ == "A light one."
    assert Light.__module__ == __name__
    assert list(Light.__annotations__) == ["sha", "detail", "count"]
    assert pickle.loads(pickle.dumps(light)) == light
    with pytest.raises(TypeError):
        Light()  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        light.sha = "other"  # type: ignore[misc]

"""`typing.NamedTuple`'s class syntax without importing `typing`, for the one-object readers.

`get task NAME`, `describe` and `history` are a new process each time, and what they import is in
every figure (DESIGN §9: `history -n 20` within 50 ms). Importing `typing` costs them ~2.2 ms
(measured after what they load anyway), ~5% of a `history`, for little more than the named tuples
they return. So the modules they load write

    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from gitops_acp.tuples import NamedTuple

    class Event(NamedTuple):
        sha: str
        detail: str = ""

Type checkers see `typing.NamedTuple`; at run time the class is `collections.namedtuple` of its
annotated fields (defaults and methods kept), as `typing.NamedTuple` makes it. `TYPE_CHECKING` is
then a module constant `False` (mypy reads any name `TYPE_CHECKING` as true).
tests/test_views.py checks that these commands do not load `typing`.
"""

from collections import namedtuple

__all__ = ["NamedTuple"]

_NOT_COPIED = frozenset(
    {"__annotations__", "__module__", "__qualname__", "__dict__", "__weakref__", "__classcell__"}
)


class _Maker(type):
    """Makes each subclass of `NamedTuple` a `collections.namedtuple` of its annotated fields."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
        if not bases:  # `NamedTuple` itself
            return super().__new__(mcs, name, bases, namespace)
        fields = list(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        defaults = [namespace[field] for field in fields if field in namespace]
        made = namedtuple(name, fields, defaults=defaults, module=str(namespace["__module__"]))  # type: ignore[misc]
        for key, value in namespace.items():
            if key not in _NOT_COPIED and key not in fields:
                setattr(made, key, value)
        made.__qualname__ = str(namespace.get("__qualname__", name))
        made.__annotations__ = dict(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        return made


class NamedTuple(metaclass=_Maker):
    """Subclass it as `typing.NamedTuple` (see the module docstring)."""

"""The public face of `gitops_acp.store.git`: callers import from the package, never its modules."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import gitops_acp.store.git as package


def test_the_package_all_is_exactly_its_public_names() -> None:
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert sorted(package.__all__) == sorted(public)
    assert set(package.__all__) == {
        "EMPTY_TREE",
        "TREE_MODE",
        "ZERO_OID",
        "CommitInfo",
        "GitRepo",
        "PushUpdate",
        "RefConflictError",
        "TreeBuilder",
        "TreeEditor",
        "init_bare",
        "is_url",
        "redact_url",
    }


def test_every_module_all_names_what_it_defines() -> None:
    modules = [info.name for info in pkgutil.iter_modules(package.__path__)]
    assert modules, "no modules found under store/git/"
    for name in modules:
        module = importlib.import_module(f"{package.__name__}.{name}")
        missing = [item for item in module.__all__ if not hasattr(module, item)]
        assert not missing, f"{module.__name__}.__all__ names {missing}, which it does not define"
        for item in module.__all__:
            value = getattr(module, item)
            home = getattr(value, "__module__", module.__name__)
            assert home == module.__name__, f"{module.__name__}.__all__ re-exports {item} from {home}"

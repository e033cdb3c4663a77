"""The store package's shape (issue 15): one home for the limits and the errors the
REST layer shares, each error with its API code, modules of a readable size, and
no import cycle among the store's modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mediaserver.store as store_pkg
from mediaserver.store import (
    Conflict,
    Invalid,
    NotFound,
    StoreError,
    Throttled,
    Unauthorized,
)
from tests.support.store import make

STORE_DIR = Path(store_pkg.__file__).parent
MAX_LINES = 700


def test_the_package_exports_the_limits_the_store_enforces(store):
    """The REST layer reads these instead of restating them: they must be the
    bounds the store really applies."""
    s = store_pkg
    assert s.REQUEST_TYPES == ("access", "correction", "deletion", "opt_out",
                               "withdraw_consent", "restriction", "objection")
    assert s.OBJECTION_PURPOSES == ("chat_history", "matching_by_interests")
    assert s.REPORT_REASONS == ("spam", "nudity", "harassment", "underage", "other")
    make(store, "u" * s.USERNAME_MAX, bio="b" * s.MAX_BIO,
         interests=[f"i{n}" for n in range(s.MAX_INTERESTS)],
         language="l" * s.LANGUAGE_MAX, password="p" * s.PASSWORD_MIN)
    make(store, "v" * s.USERNAME_MIN, language="l" * s.LANGUAGE_MIN,
         password="p" * s.PASSWORD_MAX)
    too_far = [
        ({"username": "w" * (s.USERNAME_MAX + 1)}, "username"),
        ({"username": "w" * (s.USERNAME_MIN - 1)}, "username"),
        ({"bio": "b" * (s.MAX_BIO + 1)}, "bio"),
        ({"interests": [f"i{n}" for n in range(s.MAX_INTERESTS + 1)]}, "interests"),
        ({"language": "l" * (s.LANGUAGE_MAX + 1)}, "language"),
        ({"language": "l" * (s.LANGUAGE_MIN - 1)}, "language"),
        ({"password": "p" * (s.PASSWORD_MIN - 1)}, "password"),
        ({"password": "p" * (s.PASSWORD_MAX + 1)}, "password"),
    ]
    for fields, field in too_far:
        kw = {"username": "another_user", **fields}
        with pytest.raises(Invalid) as exc:
            make(store, **kw)
        assert exc.value.field == field, fields
    p, _ = make(store, "submits")
    for kind in s.REQUEST_TYPES:
        extra = {"purpose": s.OBJECTION_PURPOSES[0]} if kind == "objection" else {}
        assert store.submit_request(p.id, kind, **extra).type == kind
    make(store, "reported")
    for reason in s.REPORT_REASONS:
        store.report_account(p.id, "reported", reason)


def test_every_store_error_carries_its_api_code(store):
    """What the REST layer answers with, carried by the error itself."""
    p, _ = make(store)
    raised: list[StoreError] = []
    for call in (
        lambda: store.get_profile("no-such-user"),
        lambda: make(store),
        lambda: store.update_profile(p.id, bio=7),
        lambda: store.sign_in("alice", "wrong password"),
    ):
        with pytest.raises(StoreError) as exc:
            call()
        raised.append(exc.value)
    assert [(type(e), e.code) for e in raised] == [
        (NotFound, "not_found"), (Conflict, "conflict"), (Invalid, "invalid"),
        (Unauthorized, "invalid_credentials"),
    ]
    assert Throttled(3.2).code == "too_many_attempts"
    assert StoreError("database error").code == "unavailable"


def store_imports(path: Path) -> tuple[set[str], list[int]]:
    """The mediaserver.store modules `path` imports (anywhere: top level, inside a
    function, under TYPE_CHECKING: each is a dependency), and the lines of imports
    inside functions."""
    tree = ast.parse(path.read_text())
    local_lines = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local_lines += [n.lineno for n in ast.walk(fn)
                            if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "mediaserver.store":  # from mediaserver.store import crypto
                found |= {a.name for a in node.names if (STORE_DIR / f"{a.name}.py").exists()}
            elif node.module.startswith("mediaserver.store."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names
                      if a.name.startswith("mediaserver.store.")}
    return found, local_lines


def store_graph() -> dict[str, tuple[set[str], list[int]]]:
    return {path.stem: store_imports(path) for path in STORE_DIR.glob("*.py")
            if path.name != "__init__.py"}


def test_store_modules_import_nothing_of_the_store_inside_functions():
    local = {name: lines for name, (_, lines) in store_graph().items() if lines}
    assert local == {}


def test_store_modules_have_no_import_cycle():
    graph = {name: deps for name, (deps, _) in store_graph().items()}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        assert module not in stack, "import cycle: " + " -> ".join(stack + [module])
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, stack + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_store_modules_stay_readable():
    sizes = {p.name: len(p.read_text().splitlines()) for p in STORE_DIR.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_operator_command_lives_in_operator_cli(tmp_path):
    missing = str(tmp_path / "missing.db")
    out = subprocess.run(
        [sys.executable, "-m", "mediaserver.store.operator_cli", "underage-reports",
         "--db", missing, "--data-key-file", str(tmp_path / "k")],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("mediaserver accounts: no database at"), out.stderr


"""The package layout's import rules (docs/architecture.md, "Who may import whom"), checked by
reading every module's imports, so a shortcut across layers fails here instead of in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "notifier"

# What each part of notifier may import from notifier itself. Modules not listed (cli.py,
# cli_common.py, devstack/, rq_settings.py, tasks.py) wire processes together and may import all.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "log": {"redaction"},  # every handler carries the redaction filter
    "redaction": {"config"},
    # store/rest.py reads the migration files to name the one a missing function comes from.
    "store": {"config", "errors", "log", "redaction", "store", "schema.migrate"},
    "providers": {"config", "errors", "log", "redaction", "providers"},
    "pipeline": {"config", "errors", "log", "redaction", "store", "providers", "pipeline"},
    # Pure event mapping: a provider's own code table is the provider's knowledge.
    "feedback": {"config", "errors", "log", "redaction", "providers", "feedback"},
    "digests": {"config", "errors", "log", "redaction", "store", "digests"},
    "schema": {"config", "errors", "log", "redaction", "store", "schema"},
    "adoption": {"config", "errors", "log", "redaction", "store", "adoption"},
    "operations": {
        "config", "errors", "log", "redaction", "cli_common", "store", "operations", "feedback",
        "providers.registry", "pipeline.breaker", "pipeline.queues",
    },
}  # fmt: skip
# Third-party packages a part must not reach for: the store and providers know nothing of RQ or
# the web, and rendering nothing of RQ, Redis or the database.
FORBIDDEN_EXTERNAL: dict[str, set[str]] = {
    "store": {"rq", "redis", "waitress", "prometheus_client", "sendgrid", "twilio", "pybreaker"},
    "providers": {"rq", "redis", "psycopg", "psycopg_pool", "waitress", "prometheus_client"},
    "pipeline.render": {"rq", "redis", "psycopg", "waitress", "prometheus_client"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "notifier":
                found.update(f"notifier.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _part(dotted: str) -> str | None:
    """The rule that applies to a module: its package, or the module itself at the top."""
    head = dotted.split(".")[0]
    return head if head in ALLOWED else None


def _allowed(target: str, allowed: set[str]) -> bool:
    """`target` is a notifier-internal dotted name without the `notifier.` prefix."""
    return any(target == rule or target.startswith(rule + ".") for rule in allowed)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _dotted(p) or "notifier")
def test_module_imports_follow_the_layers(path: Path) -> None:
    dotted = _dotted(path)
    part = _part(dotted)
    imports = _imports(path)
    broken = []
    if part is not None:
        for name in imports:
            if name == "notifier" or not name.startswith("notifier."):
                continue
            target = name.removeprefix("notifier.")
            if not _allowed(target, ALLOWED[part]):
                broken.append(name)
    for scope, banned in FORBIDDEN_EXTERNAL.items():
        if dotted == scope or dotted.startswith(scope + "."):
            broken += [n for n in imports if n.split(".")[0] in banned]
    assert not broken, f"notifier.{dotted} may not import {sorted(broken)} (docs/architecture.md)"


def test_the_rules_see_every_package() -> None:
    """A new package must get a rule (or be wiring on purpose), not slip past the check."""
    wiring = {"devstack", "templates", "__pycache__"}
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert packages - wiring <= set(ALLOWED), packages - wiring - set(ALLOWED)


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "jobs.py"
    module.write_text("from notifier.pipeline.delivery import Deliverer\nimport rq\n")
    imports = _imports(module)
    assert not _allowed("pipeline.delivery", ALLOWED["store"])
    assert {"notifier.pipeline.delivery", "rq"} <= imports

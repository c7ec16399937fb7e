"""Guards plug in by entry point (a company's own package) or by `module:Class` name."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from shared_guards import registry
from shared_guards.errors import ConfigError
from shared_guards.guard import Guard


def test_entry_point_guard_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_guards.py").write_text(textwrap.dedent('''
        from typing import ClassVar
        from shared_guards.guard import Guard
        from shared_guards.types import GuardResult

        class SecretsGuard(Guard):
            name: ClassVar[str] = "acme_secrets"

            async def check_request(self, request, ctx):
                return GuardResult.allow()
    '''))
    dist = tmp_path / "acme_guards-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-guards\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[shared_guards.guards]\nacme_secrets = acme_guards:SecretsGuard\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_point_targets.cache_clear()
    try:
        assert "acme_secrets" in registry.available()
        cls = registry.get_guard_class("acme_secrets")
        assert issubclass(cls, Guard) and cls.__name__ == "SecretsGuard"
    finally:
        registry._entry_point_targets.cache_clear()
        sys.modules.pop("acme_guards", None)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("nope", "unknown guard"), ("json:dumps", "not a Guard subclass"), ("no_such_mod:X", "cannot load")],
)
def test_bad_names(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        registry.get_guard_class(name)


def test_guard_base_is_abstract() -> None:
    class Incomplete(Guard):
        name = "incomplete"

    with pytest.raises(TypeError):
        Incomplete(Incomplete.Config(), None)  # type: ignore[abstract,arg-type]

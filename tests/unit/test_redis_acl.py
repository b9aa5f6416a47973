"""The ACL users of DESIGN §3 are declared once (contracts/redis_acl.py): the docs print
exactly those rules, and every command the product sends is in its user's list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workerpool.contracts.redis_acl import OPERATOR, ROLES, WORKER, AclRole

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "workerpool"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.user)
def test_the_docs_print_each_users_rules_verbatim(role: AclRole) -> None:
    docs = (ROOT / "docs" / "redis.md").read_text()
    assert f"ACL SETUSER {role.user} on >PASSWORD {role.rules()}\n" in docs


# Commands whose ACL names the subcommand (`+pubsub|numsub`, not `+pubsub`).
CONTAINERS = {"pubsub", "client", "script", "object", "config"}


def lua_commands(*modules: str) -> set[str]:
    """The commands the Lua scripts of these modules run (checked against the caller's ACL)."""
    found: set[str] = set()
    for module in modules:
        for command, sub in re.findall(r"redis\.call\('([A-Z]+)'(?:, '([A-Z]+)')?", (PACKAGE / module).read_text()):
            name = command.lower()
            found.add(f"{name}|{sub.lower()}" if name in CONTAINERS else name)
    return found


@pytest.mark.parametrize(
    ("role", "modules"),
    [(OPERATOR, ("controller/adapters/worker_commands.py",)), (WORKER, ("worker/queue.py",))],
    ids=["operator", "worker"],
)
def test_every_command_a_script_runs_is_allowed(role: AclRole, modules: tuple[str, ...]) -> None:
    missing = lua_commands(*modules) - set(role.commands)
    assert not missing, f"{role.user} lacks {sorted(missing)}"


def test_rules_start_from_nothing() -> None:
    for role in ROLES:
        assert role.rules().startswith("resetkeys resetchannels -@all ")
        assert "+@all" not in role.rules() and "~*" not in role.rules().split()

"""`assetlog <command>` imports only the module of its command, not every stage's (issue 15: about 0.6 s
of imports at every start, most of them for commands not run)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from assetlog.cli import COMMANDS, build_parser


def test_the_command_table_names_exactly_the_commands_each_module_registers(capsys) -> None:
    registered: dict[str, str] = {}
    for module in dict.fromkeys(COMMANDS.values()):
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(subparsers)
        registered.update(dict.fromkeys(subparsers.choices, module))
    assert registered == COMMANDS
    whole = build_parser()
    for command in COMMANDS:  # the whole parser knows each of them
        with pytest.raises(SystemExit) as leaving:
            whole.parse_args([command, "--help"])
        assert leaving.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: assetlog {command}"), command


def _imported_after(*argv: str) -> tuple[int, set[str], str]:
    """Run `assetlog argv` in a fresh interpreter; its exit status, the assetlog modules it imported, stderr."""
    script = ("import sys, json\nfrom assetlog.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
              "except SystemExit as exc:\n    code = exc.code\n"
              "print(json.dumps([code, sorted(m for m in sys.modules if m.startswith('assetlog.'))]))")
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60)
    code, modules = json.loads(done.stdout.strip().splitlines()[-1])
    return code, set(modules), done.stderr


@pytest.mark.parametrize("command", ["stack", "consume", "status", "show"])
def test_a_command_imports_its_own_module_and_not_the_others(command: str) -> None:
    code, imported, _ = _imported_after(command, "--help")
    assert code == 0
    assert COMMANDS[command] in imported
    assert not {"assetlog.demo", "assetlog.examples", "assetlog.web.cli"} & imported, imported


@pytest.mark.parametrize(("argv", "named"), [(("shwo", "x"), "'shwo'"), (("--", "show", "x"), "'--'"),
                                             (("", "show"), "''")])
def test_an_unknown_command_is_named_with_every_choice(argv: tuple[str, ...], named: str) -> None:
    code, _, stderr = _imported_after(*argv)
    assert code == 2
    assert f"invalid choice: {named}" in stderr and all(f"'{name}'" in stderr for name in COMMANDS), stderr
    assert stderr.count("\n") == 1


def test_an_unreachable_database_is_still_one_line_when_only_the_command_imported_psycopg() -> None:
    done = subprocess.run([sys.executable, "-m", "assetlog", "show", "s3://a"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "", "ASSETLOG_POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/x"})
    assert done.returncode == 1
    assert done.stderr.startswith("assetlog: cannot reach PostgreSQL (") and done.stderr.count("\n") == 1

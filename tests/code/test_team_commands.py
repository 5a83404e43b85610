"""The team's commands are shown once and run once: README.md's and infra/README.md's blocks are
exactly the commands the real-process team test runs (tests/team/topology.TEAM_COMMANDS)."""

from pathlib import Path

import pytest

from tests.team.topology import TEAM_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- the commands tests/team/test_team.py runs"


def shown_commands(readme: Path) -> list[str]:
    text = readme.read_text(encoding="utf-8")
    assert MARKER in text, f"{readme.name}: the team commands' block (after {MARKER!r}) is missing"
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = (line.split("  #", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith(("#", "export "))]  # exports: settings


@pytest.mark.parametrize("readme", ["README.md", "infra/README.md"])
def test_readme_shows_exactly_the_commands_the_team_test_runs(readme):
    assert shown_commands(ROOT / readme) == TEAM_COMMANDS


def test_team_script_has_each_subcommand_the_commands_use():
    script = (ROOT / "infra" / "team.sh").read_text()
    for command in TEAM_COMMANDS:
        if command.startswith("infra/team.sh "):
            assert f"\n  {command.split()[1]})" in script, command

"""The README's two commands: both install the tested versions, and .ci/run runs the second exactly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_both_commands_install_the_project_with_the_tested_versions():
    found = commands()
    assert len(found) == 2
    for command in found:
        installs = [part.strip() for part in command.split("&&") if "pip install" in part and " -e " in part]
        assert installs and all("-c constraints.txt" in part for part in installs), command


def test_ci_runs_the_readme_test_command_exactly():
    ci = ROOT.joinpath(".ci", "run").read_text().strip().splitlines()[-1]
    assert ci == commands()[1]

"""Every shipped process-manager definition restarts a process that exits, whatever its exit
status: a stock `rq worker` quits on a Redis outage longer than it can ride out, sometimes
with status 0 (docs/operations.md, "When a process exits")."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"


def procfile() -> dict[str, str]:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, cmd = line.partition(":")
            entries[name.strip()] = cmd.strip()
    return entries


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_a_systemd_unit_for_every_procfile_line_restarts_always() -> None:
    for name, line in procfile().items():
        found = list(SYSTEMD.glob(f"notifier-{name}*.service"))
        assert len(found) == 1, (name, found)
        service = unit(found[0])["Service"]
        program, *args = shlex.split(service["ExecStart"])
        assert [Path(program).name, *args] == shlex.split(line), name
        assert service["Restart"] == "always", name
        assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM", name


def test_pm2_restarts_on_every_exit_status() -> None:
    text = (REPO / "ecosystem.config.js").read_text()
    assert "autorestart: true" in text
    # PM2 would not restart a process exiting with one of these codes
    assert not re.search(r"\bstop_exit_codes\s*:", text)

"""The unit files in systemd/: `systemd-analyze verify` accepts both, the system unit keeps
its hardening (exposure score), and each unit's example config is a valid config.

`verify` checks that ExecStart's program exists, and the units name the installed one
(/opt/streamemo/venv/bin/streamemo), which a test machine does not have: each unit is
verified as a copy whose ExecStart names this test's own `streamemo` instead."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, STREAMEMO

UNITS = ROOT / "systemd"
INSTALLED = "/opt/streamemo/venv/bin/streamemo"
EXPOSURE_LIMIT = 1.6  # the score systemd/README.md records; raise it only with a reason there

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian: systemd)")


def _copy_for_this_machine(name: str, tmp_path: Path) -> Path:
    local = Path(sys.executable).with_name("streamemo")
    if not local.exists():
        pytest.skip(f"{local} is absent: the package is not installed in this environment")
    text = (UNITS / name).read_text()
    assert INSTALLED in text, f"{name} should start the installed streamemo"
    copy = tmp_path / name
    copy.write_text(text.replace(INSTALLED, str(local)))
    return copy


def _analyze(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    runtime = tmp_path / "runtime"  # the user manager `--user verify` starts wants one
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, env=env, timeout=60)


@needs_analyze
@pytest.mark.parametrize("name, scope", [("streamemo.service", []), ("streamemo.user.service", ["--user"])])
def test_unit_verifies(name, scope, tmp_path):
    unit = _copy_for_this_machine(name, tmp_path)
    result = _analyze(*scope, "verify", str(unit), tmp_path=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_analyze
def test_system_unit_exposure_score(tmp_path):
    unit = _copy_for_this_machine("streamemo.service", tmp_path)
    result = _analyze("security", "--offline=true", str(unit), tmp_path=tmp_path)
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze cannot score a unit file offline (needs systemd >= 252)")
    line = [ln for ln in result.stdout.splitlines() if "Overall exposure level" in ln]
    assert line, result.stdout + result.stderr
    score = float(line[0].split(":")[1].split()[0])
    assert score <= EXPOSURE_LIMIT, line[0]


def test_units_carry_the_service_protocol():
    system = (UNITS / "streamemo.service").read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
                    "DynamicUser=yes", "SupplementaryGroups=audio", "ProtectSystem=strict", "DevicePolicy=closed",
                    "DeviceAllow=char-alsa rw", "ConfigurationDirectory=streamemo", "StateDirectory=streamemo",
                    "--config /etc/streamemo/streamemo.toml"):
        assert setting in system, setting
    user = (UNITS / "streamemo.user.service").read_text()
    for setting in ("Type=notify", "WatchdogSec=", "ExecReload=", "WantedBy=default.target"):
        assert setting in user, setting


def test_example_config_is_valid():
    result = subprocess.run([*STREAMEMO, "run", "--config", str(UNITS / "streamemo.toml"), "--print-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'path = "/opt/streamemo/models/default"' in result.stdout
    assert 'bind = "tcp://127.0.0.1:5556"' in result.stdout


def test_the_user_service_gets_its_own_config(tmp_path):
    """`make install-user-service` (the Makefile's own recipe; `-o setup`: the venv is this
    one) installs a config that speaks of the user service, not the system one's /etc, ALSA
    devices and sudo, and names this checkout's model."""
    result = subprocess.run(["make", "-o", "setup", "install-user-service", f"USER_UNITDIR={tmp_path / 'units'}",
                             f"USER_CONFDIR={tmp_path / 'config'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = tmp_path / "config" / "streamemo.toml"
    text = installed.read_text()
    assert text.startswith("# ~/.config/streamemo/streamemo.toml: the user service's configuration")
    for system_only in ("/etc/streamemo", "sudo", "ALSA", "/run/credentials"):
        assert system_only not in text, system_only
    printed = subprocess.run([*STREAMEMO, "run", "--config", str(installed), "--print-config"],
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert f'path = "{ROOT / "models" / "default"}"' in printed.stdout
    assert 'source = "default"' in printed.stdout
    assert "%E/streamemo/streamemo.toml" in (tmp_path / "units" / "streamemo.service").read_text()

"""The stand-in of NSSM (sim_nssm.py) against the real nssm.exe, the bundle's build 2.24-101-g897c7ad, run under Wine.

The same `nssm install/set/reset/get/remove` sequences run on the stand-in and on the binary; the tests compare what
each leaves in the service's registry key (value names, types and data, the AppExit subkey) and what `get` and `set`
print. Every setting that roles/nssm_services/files/nssm_settings.ps1 writes (plugins/filter/nssm_services.py
`_settings`) is set at its default and off it. The last tests start services through Wine's service control manager
and check what NSSM does at run time: the environment, the command line, the exit actions and the throttle.

Needs Wine and .venv/nssm/nssm.exe (`bash scripts/setup.sh --with-test-servers`); skipped with that reason otherwise.
One Wine prefix for the module (a few seconds to boot). Each scenario is a sequence of nssm.exe runs on services of
its own, in one cmd.exe; the scenarios run side by side, once, and the tests read their results.
"""
from __future__ import annotations

import sys
import time

import pytest
import yaml

import nssm_wine
import sim_nssm as nssm
from rolerun import REPO

pytestmark = pytest.mark.simulated

# The role's filter plugin, as the unit tests load it: the collection on sys.path (.venv/collections, setup.sh).
sys.path.insert(0, str(REPO / ".venv" / "collections"))
try:
    from ansible_collections.enclave.prefect.plugins.filter import nssm_services as plan
except ImportError as exc:  # pragma: no cover - without the toolchain
    pytest.skip(f"the collection is not importable ({exc}); run `bash scripts/setup.sh`", allow_module_level=True)

APP = "C:\\Prefect\\venvs\\current\\Scripts\\python.exe"
# What nssm_settings.ps1 sets on a server service, from the filter itself (the role's defaults).
CFG = {"rotate_online": True, "rotate_seconds": 0, "rotate_bytes": 10485760, "throttle_ms": 5000}
SVC = {"parameters": "-m prefect server start --host 127.0.0.1 --port 4200", "directory": "C:\\Prefect\\data",
       "stdout": "C:\\Prefect\\logs\\prefect-server.out.log", "stderr": "C:\\Prefect\\logs\\prefect-server.err.log"}
ROLE = dict(plan._settings(CFG, SVC, 10000, 15000), Application=APP)
# A value off NSSM's default for the settings where the role's own value is the default.
OFF = {"AppStdoutCreationDisposition": "2", "AppStderrCreationDisposition": "2", "AppRotateSeconds": "86400",
       "AppStopMethodSkip": "6", "AppStopMethodWindow": "3000", "AppStopMethodThreads": "3000", "AppKillProcessTree": "0",
       "AppNoConsole": "1"}


def default_of(key: str) -> str:
    _kind, default = nssm.NSSM_SETTINGS[key]
    return "" if default is None else str(default)


def off_of(key: str) -> str:
    return ROLE[key] if ROLE[key] != default_of(key) else OFF[key]


# ---- the scenarios: {name: commands}; every command's services belong to its scenario alone

SETTINGS = [k for k in ROLE if k != "Application"]
NUMBERS = ["", "0x10", "0x5DC", "010", "08", "-1", "4294967295", "4294967296", "99999999999999999999", " 7", "7 ",
           "12x", " "]
STRINGS = ["-m prefect worker start --pool default-pool --name w1", "C:\\dir with space\\", "100% & 50%|<x>^",
           "%SystemRoot%\\x", "", 'a "b c" d \\"e\\"', "caf\u00e9"]
ENV = ["PREFECT_HOME=C:\\Prefect\\data", "PREFECT_API_URL=http://127.0.0.1:4200/api", "B=%PREFECT_HOME% x"]
RESET = ["AppParameters", "AppDirectory", "AppStdout", "AppThrottle", "AppRotateFiles", "AppKillProcessTree",
         "AppEnvironmentExtra"]


def _at_default(name: str, keys: list[str]) -> list[tuple[str, ...]]:
    commands = [("install", name, APP)]
    for key in keys:
        commands += [("set", name, key, off_of(key)), ("set", name, key, default_of(key))]
    return commands


def _numbers(name: str, key: str, values: list[str]) -> list[tuple[str, ...]]:
    commands = [("install", name, APP)]
    for value in values:
        commands += [("set", name, key, value), ("get", name, key)]
    return commands


SCENARIOS = {
    # nssm_settings.ps1: `install <name> <application>`, then `set <name> Start SERVICE_DEMAND_START`.
    "install": [("install", "inst", APP), ("install", "inst_args", "C:\\app\\python.exe", "-m", "prefect", "server start"),
                ("install", "inst_root", "C:\\python.exe"), ("install", "inst_bare", "python.exe"),
                ("set", "inst", "Start", "SERVICE_DEMAND_START"), ("get", "inst", "Start")],
    # Each setting off its default and back (a non-zero default is deleted, a zero one written as 0).
    "at_default_1": _at_default("at_default_1", SETTINGS[:len(SETTINGS) // 2]),
    "at_default_2": _at_default("at_default_2", SETTINGS[len(SETTINGS) // 2:]),
    # Each setting off its default (the role's value where it differs).
    "off_default": [("install", "off_default", APP)] + [("set", "off_default", k, off_of(k)) for k in ROLE]
    + [("get", "off_default", k) for k in ("AppThrottle", "AppKillProcessTree", "AppParameters")],
    # Never set: `get` prints the defaults.
    "fresh": [("install", "fresh", APP)] + [("get", "fresh", k) for k in ROLE] + [("get", "fresh", "AppExit", "Default")],
    # An empty Application: the service is no longer NSSM's.
    "no_application": [("install", "no_app", APP), ("set", "no_app", "Application", ""), ("get", "no_app", "AppThrottle"),
                       ("set", "no_app", "AppThrottle", "5000")],
    "numbers_1": _numbers("numbers_1", "AppThrottle", NUMBERS[:7]),
    "numbers_2": _numbers("numbers_2", "AppThrottle", NUMBERS[7:]),
    "numbers_3": _numbers("numbers_3", "AppRotateBytes", ["", "1", "-1", "4294967296"]),
    "strings": [("install", "strings", APP)]
    + [c for v in STRINGS for c in (("set", "strings", "AppParameters", v), ("get", "strings", "AppParameters"))]
    + [("set", "strings", "AppStdout", ""), ("get", "strings", "AppStdout"), ("set", "strings", "AppStdout", STRINGS[1]),
       ("set", "strings", "AppDirectory", "C:\\a", "b", "c"), ("get", "strings", "AppDirectory")],
    "reset": [("install", "reset", APP)] + [("set", "reset", k, off_of(k)) for k in RESET if k in ROLE]
    + [("set", "reset", "AppEnvironmentExtra", "A=1")] + [("reset", "reset", k) for k in RESET]
    + [("get", "reset", k) for k in ("AppParameters", "AppStdout", "AppThrottle")],
    "environment": [("install", "env_kept", APP), ("set", "env_kept", "AppEnvironmentExtra", *ENV),
                    ("get", "env_kept", "AppEnvironmentExtra"), ("install", "env_cleared", APP),
                    ("set", "env_cleared", "AppEnvironmentExtra", *ENV), ("set", "env_cleared", "AppEnvironmentExtra", ""),
                    ("get", "env_cleared", "AppEnvironmentExtra")],
    "exits": [("install", "exits", APP), ("get", "exits", "AppExit", "Default"),
              ("set", "exits", "AppExit", "Default", "Exit"), ("get", "exits", "AppExit", "Default"),
              ("set", "exits", "AppExit", "Default", "restart"), ("set", "exits", "AppExit", "3", "ignore"),
              ("set", "exits", "AppExit", "4", "Restart"), ("set", "exits", "AppExit", "5", "Suicide"),
              ("set", "exits", "AppExit", "0x6", "Exit"), ("get", "exits", "AppExit", "6"),
              ("get", "exits", "AppExit", "3"), ("get", "exits", "AppExit", "7"),
              ("set", "exits", "AppExit", "3", "Bogus"), ("set", "exits", "AppExit", "x", "Exit"),
              ("reset", "exits", "AppExit", "5"), ("set", "exits", "AppExit", "Default", "Exit"),
              ("reset", "exits", "AppExit", "Default"), ("get", "exits", "AppExit", "5")],
    "remove": [("install", "gone", APP), ("set", "gone", "AppThrottle", "5000"), ("remove", "gone", "confirm"),
               ("get", "gone", "AppThrottle")],
}


class StandIn:
    """The stand-in's services: {name: (Parameters dict, AppExit dict)}. run() is one command, returning what nssm.exe
    should report: (exit code, stdout, stderr), without the last line end."""

    def __init__(self):
        self.services: dict[str, tuple[dict, dict]] = {}

    def run(self, args: tuple[str, ...]) -> tuple[int, str, str]:
        verb, name, *rest = args
        if verb == "install":
            self.services[name] = (nssm.nssm_install(*rest), {"": nssm.NSSM_EXIT_DEFAULT})
            return 0, 'Service "%s" installed successfully!' % name, ""
        if name not in self.services:
            return 3, "", "Can't open service!\nOpenService(): Service does not exist.\n"
        registry, actions = self.services[name]
        if verb == "remove":
            del self.services[name]
            return 0, 'Service "%s" removed successfully!' % name, ""
        key = rest[0]
        if not nssm.nssm_manages(registry):
            return 1, "", nssm.nssm_native_message(key)
        if verb == "get":
            return 0, nssm.nssm_get_exit(actions, rest[1]) if key == "AppExit" else nssm.nssm_get(registry, key), ""
        if key == "AppExit":
            result = nssm.nssm_set_exit(actions, rest[1], rest[2]) if verb == "set" else nssm.nssm_reset_exit(actions, rest[1])
        elif verb == "set":
            result = nssm.nssm_set(registry, key, rest[1] if len(rest) == 2 else rest[1:])
        else:
            result = nssm.nssm_reset(registry, key)
        message = nssm.nssm_message(result, key, name)
        return (6, "", message) if result < 0 else (0, message, "")

    def typed(self, name: str) -> dict:
        """The service's Parameters key as reg export shows it: {name: (type, data)}."""
        return {k: (nssm.nssm_type(k), v) for k, v in self.services[name][0].items()}

    def exits(self, name: str) -> dict:
        return {k: ("REG_SZ", v) for k, v in self.services[name][1].items()}


class Scenario:
    """One scenario as nssm.exe ran it: its calls and the registry keys of its services afterwards."""

    def __init__(self, calls: list[nssm_wine.Call], keys: dict[str, dict | None]):
        self.calls, self.keys = calls, keys

    def differences(self, skip: tuple[tuple[str, ...], ...] = ()) -> list[str]:
        """Where the stand-in, running the same commands, differs from nssm.exe: each call's exit code and output,
        then each service's Parameters key and AppExit subkey (value names, types, data)."""
        model, problems = StandIn(), []
        for call in self.calls:
            if call.args in skip:
                continue
            rc, out, err = model.run(call.args)
            got = (call.rc, call.out.rstrip("\n"), call.err.rstrip("\n"))
            # NSSM prints more before its last error line (the valid exit actions; "not an NSSM service").
            if rc == call.rc and rc and out == got[1] and got[2].endswith(err.rstrip("\n")):
                continue
            if got != (rc, out, err.rstrip("\n")):
                problems.append(f"{call.args}: nssm.exe {got!r}, stand-in {(rc, out, err)!r}")
        for name, real in self.keys.items():
            if name not in model.services:
                if real is not None:
                    problems.append(f"{name}: nssm.exe left {real}, the stand-in removed the service")
                continue
            if real is None:
                problems.append(f"{name}: no key in nssm.exe's registry")
                continue
            parameters, exits = real.get("Parameters", {}), real.get("Parameters\\AppExit", {})
            if parameters != model.typed(name):
                problems.append(f"{name} Parameters: nssm.exe {parameters}, stand-in {model.typed(name)}")
            if exits != model.exits(name):
                problems.append(f"{name} AppExit: nssm.exe {exits}, stand-in {model.exits(name)}")
        return problems


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    nssm_wine.skip_unless_available()
    prefix = nssm_wine.NssmWine(tmp_path_factory.mktemp("nssm-wine"))
    yield prefix
    prefix.close()


@pytest.fixture(scope="module")
def ran(wine) -> dict[str, Scenario]:
    """Every scenario run once, side by side, then every service's key exported. Commands that cmd.exe could change
    (a '"' or non-ASCII text in an argument) run as processes of their own, in order, after their scenario's batch
    up to them."""
    batched, direct = {}, {}
    for name, commands in SCENARIOS.items():
        cut = next((i for i, c in enumerate(commands) if not nssm_wine.batchable(c)), None)
        batched[name], direct[name] = (commands, []) if cut is None else (commands[:cut], commands[cut:])
    results = dict(zip(batched, wine.batches(list(batched.values()))))
    for name, commands in direct.items():
        results[name] += wine.batch(commands)[0] if commands else []
    services = {name: sorted({c[1] for c in commands if c[0] == "install"}) for name, commands in SCENARIOS.items()}
    keys = wine.registry(*(s for names in services.values() for s in names))
    return {name: Scenario(results[name], {s: keys[s] for s in services[name]}) for name in SCENARIOS}


def test_the_wheel_carries_the_bundles_nssm_build(wine):
    rc, out = wine.run("version")
    assert (rc, out.strip()) == (0, nssm_wine.NSSM_VERSION)
    catalogue = yaml.safe_load((REPO / "roles/common/vars/main/installers.yml").read_text())
    assert "NSSM %s 64-bit" % catalogue["prefect_installers"]["nssm"]["version"] in out


def test_install_writes_application_parameters_directory_and_the_default_exit_action(ran):
    """`nssm install` writes Application, AppParameters (the arguments joined by ' ', unquoted) and AppDirectory (the
    application's directory), all REG_EXPAND_SZ, and the AppExit subkey's default Restart; the service is automatic,
    own-process, LocalSystem, its ImagePath nssm.exe's path. `set Start` is checked apart (not a Parameters value)."""
    scenario = ran["install"]
    start = [c for c in scenario.calls if c.args[2:3] == ("Start",)]
    assert [c.out.strip() for c in start] == ['Set parameter "Start" for service "inst".', "SERVICE_DEMAND_START"]
    assert not scenario.differences(skip=tuple(c.args for c in start))
    assert scenario.keys["inst_root"]["Parameters"]["AppDirectory"] == ("REG_EXPAND_SZ", "C:\\")
    assert scenario.keys["inst_args"]["Parameters"]["AppParameters"] == ("REG_EXPAND_SZ", "-m prefect server start")
    for name, key in scenario.keys.items():
        service = {k: v for k, (_kind, v) in key[""].items() if k in nssm.NSSM_INSTALLED_SERVICE}
        want = dict(nssm.NSSM_INSTALLED_SERVICE)
        if name == "inst":
            want["Start"] = nssm.NSSM_START_TYPES["SERVICE_DEMAND_START"]
        assert service == want, name
        # Wine's service control manager writes ImagePath as REG_SZ where Windows writes REG_EXPAND_SZ: data only.
        assert key[""]["ImagePath"][1] == nssm.nssm_image_path(nssm_wine.NSSM_WINDOWS_PATH)


def test_image_path_is_quoted_when_it_holds_a_space(wine):
    """`nssm install` registers its own path through PathQuoteSpaces; nssm_settings.ps1 passes a moved NSSM's path to
    `set ImagePath` quoted the same way, and NSSM stores it as given."""
    spaced = wine.drive_c() / "Program Files" / "NSSM"
    spaced.mkdir(parents=True)
    (spaced / "nssm.exe").write_bytes(nssm_wine.NSSM_EXE.read_bytes())
    quoted = nssm.nssm_image_path("C:\\Program Files\\NSSM\\nssm.exe")
    assert quoted == '"C:\\Program Files\\NSSM\\nssm.exe"'
    proc = wine.wine("C:\\Program Files\\NSSM\\nssm.exe", "install", "spaced", APP)
    assert proc.returncode == 0, nssm_wine.decode(proc.stdout + proc.stderr)
    calls, keys = wine.batch([("install", "moved", APP), ("set", "moved", "ImagePath", quoted)], export=("spaced", "moved"))
    assert [c.rc for c in calls] == [0, 0]
    assert keys["spaced"][""]["ImagePath"][1] == keys["moved"][""]["ImagePath"][1] == quoted
    assert keys["spaced"]["Parameters"] == {k: (nssm.nssm_type(k), v) for k, v in nssm.nssm_install(APP).items()}


def test_every_setting_of_the_role_at_its_default_and_off_it(ran):
    """Each setting nssm_settings.ps1 writes, set off its default and back to it, set off it, and never set."""
    problems = [p for name in ("at_default_1", "at_default_2", "off_default", "fresh") for p in ran[name].differences()]
    assert not problems, "\n".join(problems)
    # What nssm_settings.ps1 assumes: an absent value is the filter's NSSM_DEFAULTS (the Defaults it passes) and
    # NSSM_EXIT_DEFAULT; each number is a REG_DWORD, each string a REG_EXPAND_SZ (Read-Setting takes String or
    # ExpandString). `nssm install` wrote Application, AppParameters and AppDirectory itself.
    fresh = ran["fresh"]
    printed = {c.args[2]: c.out.rstrip("\n") for c in fresh.calls if c.args[0] == "get" and c.args[2] != "AppExit"}
    written = nssm.nssm_install(APP)
    assert printed == {k: written.get(k, str(plan.NSSM_DEFAULTS.get(k, ""))) for k in ROLE}
    assert fresh.calls[-1].out.strip() == plan.NSSM_EXIT_DEFAULT
    for key, (kind, _data) in ran["off_default"].keys["off_default"]["Parameters"].items():
        assert kind == ("REG_DWORD" if isinstance(plan.NSSM_DEFAULTS.get(key), int) else "REG_EXPAND_SZ"), key
    # The filter's table and the stand-in agree on what NSSM uses for an absent value.
    assert {k: nssm.nssm_get({}, k) for k in plan.NSSM_DEFAULTS} == {k: str(v) for k, v in plan.NSSM_DEFAULTS.items()}


def test_an_empty_application_makes_the_service_foreign_to_nssm(ran):
    """`set Application ""` is written, and from then on NSSM refuses every App* setting of the service, `get` too
    (exit code 1): nssm_settings.ps1 always writes a non-empty Application."""
    assert not ran["no_application"].differences()
    assert [c.rc for c in ran["no_application"].calls] == [0, 0, 1, 1]


def test_numbers_are_read_as_the_c_runtime_reads_them(ran):
    """nssm.cpp str_number: _tcstoul(value, &bogus, 0) into Windows' 32-bit unsigned long, which must take the whole
    text: a leading 0 is octal, 0x hex, '-1' wraps, too large is 4294967295, '' is 0, trailing text fails (exit 6).
    The filter hands over decimal numbers from 0 to 4294967295 only, which read back as written."""
    problems = [p for name in ("numbers_1", "numbers_2", "numbers_3") for p in ran[name].differences()]
    assert not problems, "\n".join(problems)


def test_strings_are_stored_as_given(ran):
    """REG_EXPAND_SZ exactly as the one argument holds it ('%', quotes, a trailing backslash, an empty string); several
    arguments join with ' '."""
    assert not ran["strings"].differences()


def test_reset_deletes_numbers_and_strings_without_a_default(ran):
    """`nssm reset`: numbers, AppStdout and the environment are deleted; AppParameters and AppDirectory, whose default
    is "", are written as "" (reported as set)."""
    assert not ran["reset"].differences()


def test_environment_is_a_multi_string(ran):
    """REG_MULTI_SZ, one NAME=value per argument, as nssm_settings.ps1 writes AppEnvironmentExtra itself; an empty
    value deletes it. '%' is stored as it is (NSSM expands at each start, see the run-time tests)."""
    assert not ran["environment"].differences()
    assert ran["environment"].keys["env_kept"]["Parameters"]["AppEnvironmentExtra"] == ("REG_MULTI_SZ", ENV)


def test_exit_actions(ran):
    """`set AppExit Default <action>` (what nssm_settings.ps1 runs) writes the subkey's default value, Restart too
    (reported as a reset); a code's own action overrides it; `get` of a code without one prints the default's."""
    assert not ran["exits"].differences()


def test_remove_takes_the_parameters_with_the_service(ran):
    """Removing a service (win_service state=absent, DeleteService; here `nssm remove`) removes its Parameters key:
    the stand-in keeps that key inside the service's entry."""
    assert not ran["remove"].differences()
    assert ran["remove"].keys["gone"] is None


# ---- run time: NSSM starting applications through Wine's service control manager

CMD = "C:\\windows\\system32\\cmd.exe"
ENVIRONMENT = ["FOO=bar", "BAZ=%FOO%-x", "UND=%NOPE%-y", "SYS=%SystemRoot%", "AFTER=%ZED%", "ZED=z", "PCT=100%"]
MARKER = "HKLM\\Software\\EnclaveNssmTest"


@pytest.fixture(scope="module")
def started(wine):
    """Four services, started: `report` (cmd.exe) writes its environment, arguments and working directory and exits 0
    (AppExit Default Exit: the service stops); `expand` runs reg.exe, which expands nothing itself, from an Application
    and AppParameters holding %NAME%; `throttled` exits 3 at once (AppExit Default Restart, AppThrottle 10 s: NSSM
    restarts it, throttled); `ignored` exits 3 with AppExit 3 Ignore (the service stays running)."""
    out = wine.drive_c() / "out"
    out.mkdir()
    calls, _ = wine.batch([
        ("install", "report", CMD), ("set", "report", "AppEnvironmentExtra", *ENVIRONMENT),
        ("set", "report", "AppDirectory", "C:\\out"), ("set", "report", "AppExit", "Default", "Exit"),
        ("install", "expand", "%SystemRoot%\\system32\\reg.exe"), ("set", "expand", "AppEnvironmentExtra", "FOO=bar"),
        ("set", "expand", "AppExit", "Default", "Exit"),
        ("install", "throttled", CMD, "/c", "echo", "run>>C:\\out\\throttled.txt", "&", "exit", "3"),
        ("set", "throttled", "AppThrottle", "10000"),
        ("install", "ignored", CMD, "/c", "echo", "run>>C:\\out\\ignored.txt", "&", "exit", "3"),
        ("set", "ignored", "AppExit", "3", "Ignore"),
        ("set", "report", "AppParameters",
         '/c set > C:\\out\\env.txt & cd > C:\\out\\dir.txt & echo "a b" \\"c\\" %NOPE% > C:\\out\\args.txt'),
        ("set", "expand", "AppParameters", f'add {MARKER} /v "%FOO% x" /d "%NOPE% y" /f')])
    assert all(c.rc == 0 for c in calls), calls
    names = ("report", "expand", "throttled", "ignored")
    starts = {c.args[1]: c for group in wine.batches([[("start", n)] for n in names]) for c in group}
    seen: dict[str, set[str]] = {name: set() for name in names}
    deadline = time.monotonic() + 30
    while True:
        for call in wine.batches([[("status", n) for n in names]])[0]:
            seen[call.args[1]].add(call.out.strip())
        runs = (out / "throttled.txt").read_text().split() if (out / "throttled.txt").exists() else []
        if (out / "args.txt").exists() and len(runs) >= 2 and "SERVICE_PAUSED" in seen["throttled"] \
                and (out / "ignored.txt").exists() and "SERVICE_STOPPED" in seen["expand"] \
                and "SERVICE_STOPPED" in seen["report"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    status = {c.args[1]: c.out.strip() for c in wine.batches([[("status", n) for n in names]])[0]}
    files = {f.stem: f.read_bytes().decode("cp1252").replace("\r\n", "\n") for f in out.glob("*.txt")}
    marker = wine.export(MARKER)[MARKER] or {}
    return {"starts": starts, "seen": seen, "status": status, "files": files, "marker": next(iter(marker.values()), {})}


def test_app_environment_extra_expands_in_order(started):
    """NSSM expands each AppEnvironmentExtra value with ExpandEnvironmentStrings in its own process, in the order of
    the REG_MULTI_SZ (env.cpp set_environment_block): names defined before (the system's, earlier entries) expand, a
    later entry's name and an undefined name stay as written, a lone '%' stays."""
    env = dict(line.split("=", 1) for line in started["files"]["env"].splitlines() if "=" in line)
    assert {k: env[k] for k in ("FOO", "BAZ", "UND", "SYS", "AFTER", "ZED", "PCT")} == {
        "FOO": "bar", "BAZ": "bar-x", "UND": "%NOPE%-y", "SYS": env["SystemRoot"], "AFTER": "%ZED%", "ZED": "z",
        "PCT": "100%"}


def test_application_and_app_parameters_are_expanded_then_passed_as_written(started):
    """The command line is '"<Application>" <AppParameters>' (service.cpp start_service), both read with expansion
    (REG_EXPAND_SZ, registry.cpp get_parameters) after AppEnvironmentExtra is set: a %NAME% of the service's own
    environment reaches the command line expanded, an undefined one as written. NSSM neither quotes nor escapes
    AppParameters: the application's C runtime splits it (reg.exe got '"bar x"' as one argument). The working
    directory is AppDirectory."""
    assert started["status"]["expand"] == "SERVICE_STOPPED"
    assert started["marker"] == {"bar x": ("REG_SZ", "%NOPE% y")}
    assert started["files"]["args"] == '"a b" \\"c\\" %NOPE% \n'
    assert started["files"]["dir"].strip() == "C:\\out"


def test_exit_actions_and_throttle_at_run_time(started):
    starts, seen, status, files = started["starts"], started["seen"], started["status"], started["files"]
    # AppExit Default Exit: the application exited 0 and the service stopped. (NSSM reports the service running only
    # once the application outlived AppThrottle, so `nssm start` usually sees the stop and exits 1; on a busy machine
    # the application may outlive it.)
    assert status["report"] == "SERVICE_STOPPED"
    assert starts["report"].rc == 0 or "SERVICE_STOPPED" in starts["report"].err
    # AppExit Default Restart, an application that ran shorter than AppThrottle (10 s here): NSSM restarts it after a
    # growing delay, during which the service is paused (the body's scm_state "paused", which nssm_status.ps1 reports).
    assert "SERVICE_PAUSED" in seen["throttled"]
    assert len(files["throttled"].split()) >= 2
    # AppExit 3 Ignore: NSSM keeps the service running without its application, which it does not start again.
    assert starts["ignored"].rc == 0 and status["ignored"] == "SERVICE_RUNNING"
    assert files["ignored"].split() == ["run"]

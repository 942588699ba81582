"""Ship a flow from a workstation (issue 16, the people's CLI and SDK): the journey of README "Ship a flow", for real.

Prefect's client cannot speak Windows authentication, so a data engineer's `prefect` reaches the API on the machine
path (`prefect_worker_port`, IIS Basic over TLS) from a network of `prefect_cli_networks`, as `CORP\\user:password`;
IIS admits members of `iis_proxy_allowed_groups` there besides the remote workers' account. Here:

- the server is started with the environment nssm_services writes (roles_env.py), the remote worker with the service
  parameters and environment the role plans for the example inventory's prefect-wrk01 (`--pool windows-etl`, its
  queues, the machine path's auth string and PREFECT_CLIENT_CUSTOM_HEADERS); only paths, the API URL and the CA file
  are made local, and the worker polls every 2 s instead of 10;
- in front of it, arr_proxy.py on HTTPS with a certificate issued by a test CA (the stand-in for the enclave CA: every
  client trusts it only through PREFECT_API_SSL_CERT_FILE, as on Windows, where Prefect ignores the certificate store),
  admitting `Authorization: Basic` of exactly two credentials: the person's and the worker's;
- the person runs the pinned Prefect's CLI with the README's settings: a profile holding the URL and the CA file (not
  secret, written by `prefect config set`), the auth string and the websocket header in the session's environment
  (what the README's prompt produces; never on a command line). `prefect deploy` reads prefect.yaml in a directory
  standing in for the file share \\\\fileserver\\prefect-flows\\etl, whose pull step
  `prefect.deployments.steps.set_working_directory` names that share: the worker runs the flow from there, not from a
  copy. `prefect deployment run --watch` follows the run to COMPLETED, `prefect flow-run ls` and `prefect flow-run logs`
  show it;
- negative controls: no credential, a wrong password, and no CA file are refused, and the CLI says so; `--watch` with
  the auth string alone (no PREFECT_CLIENT_CUSTOM_HEADERS) stops at once, its websocket upgrades refused.

About 30 s on two cores, most of it the server's and the worker's start and the flow run's process.

Not shown: Windows (a UNC path, the worker account's right to read the share, the CLI on a Windows workstation),
IIS itself (Basic against Active Directory, URL Authorization by group, the IP restriction to prefect_cli_networks):
the proxy models only "these two credentials pass, anything else gets 401".
"""
from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import secrets
import shlex
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from arr_proxy import ArrProxy
from roles_env import VAULT, server_plan
from servers import PINNED_PREFECT, REPO, clean_env, prefect_bin, stop_groups, WORKER_STOP_SECONDS

pytestmark = pytest.mark.slow

WRK01 = "prefect-wrk01.corp.local"
# A person of CORP in iis_proxy_allowed_groups; IIS Basic on the machine path needs the domain (defaultLogonDomain is
# the proxy host's own name there). A fresh password per run.
PERSON = "CORP\\a.engineer:" + secrets.token_urlsafe(15)
PERSON_PASSWORD = PERSON.split(":", 1)[1]
WORKER = VAULT["vault_prefect_worker_api_auth_string"]
FLOW = '''"""The team's nightly job, as it lives on the share."""
from pathlib import Path

from prefect import flow, get_run_logger


@flow(name="nightly-etl")
def nightly(day: str = "today") -> str:
    get_run_logger().info("nightly-etl for %s ran %s", day, Path(__file__).resolve())
    return day
'''


def _basic(credential: str) -> str:
    return "Basic " + base64.b64encode(credential.encode()).decode()


# --------------------------------------------------------------------------- the enclave CA, the share, the front door


def _issue_ca_and_server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (the enclave CA's stand-in) and a server certificate it issued for 127.0.0.1. Returns (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Enclave Root CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "enclave-ca.pem", directory / "proxy.pem", directory / "proxy.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def enclave_ca(tmp_path_factory) -> tuple[Path, Path, Path]:
    return _issue_ca_and_server_certificate(tmp_path_factory.mktemp("enclave-ca"))


@pytest.fixture(scope="module")
def front(roles_server, enclave_ca):
    """The machine path: HTTPS, IIS Basic admitting the person (a member of iis_proxy_allowed_groups) and the worker."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(enclave_ca[1]), str(enclave_ca[2]))
    proxy = ArrProxy(roles_server.port, basic={PERSON, WORKER}, tls=context, close_with_upstream=True).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def share(tmp_path_factory) -> Path:
    """The team's project on the file share (\\\\fileserver\\prefect-flows\\etl): the flow and prefect.yaml."""
    project = tmp_path_factory.mktemp("fileserver") / "prefect-flows" / "etl"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "nightly.py").write_text(FLOW)
    (project / "prefect.yaml").write_text(f"""\
name: etl
prefect-version: {PINNED_PREFECT}
# The worker runs the code where it lives: the share, by its UNC path on Windows (never a mapped drive letter).
pull:
- prefect.deployments.steps.set_working_directory:
    directory: '{project}'
deployments:
- name: nightly
  entrypoint: flows/nightly.py:nightly
  parameters:
    day: '2025-01-31'
  work_pool:
    name: windows-etl
    work_queue_name: nightly
""")
    return project


# --------------------------------------------------------------------------- the remote worker as the role writes it


@pytest.fixture(scope="module")
def wrk01_plan(tmp_path_factory) -> dict:
    """The worker service nssm_services plans for prefect-wrk01 (a real PEM file for the example's CA placeholder)."""
    ca = str(REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem")
    return server_plan(tmp_path_factory.mktemp("wrk01-plan"), host=WRK01, kind="worker",
                       extra_vars={"prefect_api_ca_cert": ca})


@pytest.fixture(scope="module")
def remote_worker(roles_server, front, enclave_ca, wrk01_plan, tmp_path_factory):
    """`python -P -m prefect worker start --pool windows-etl ...` with the plan's parameters and environment, behind the
    front; its pool created as the role's pools stage creates it; ONLINE before the tests start."""
    env = dict(wrk01_plan["environment"])
    assert env["PREFECT_API_AUTH_STRING"] == WORKER and env["PREFECT_API_URL"].startswith("https://")
    assert json.loads(env["PREFECT_CLIENT_CUSTOM_HEADERS"]) == {"Authorization": _basic(WORKER)}
    root = tmp_path_factory.mktemp("wrk01")
    env.update(PREFECT_API_URL=f"{front.url}/api", PREFECT_API_SSL_CERT_FILE=str(enclave_ca[0]),
               PREFECT_HOME=str(root / "worker-data"), PREFECT_WORKER_QUERY_SECONDS="2",
               PREFECT_WORKER_PREFETCH_SECONDS="2")
    status, body = roles_server.api("POST", "/work_pools/", {"name": wrk01_plan["pool"], "type": "process"})
    assert status in (201, 409), body
    (root / "flows").mkdir()  # the service's AppDirectory, C:\Prefect\flows: not where the flow's code is
    log = root / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([prefect_bin("python"), *shlex.split(wrk01_plan["parameters"])], env=clean_env(**env),
                                cwd=root / "flows", stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            status, workers = roles_server.api("POST", f"/work_pools/{wrk01_plan['pool']}/workers/filter", {})
            if status == 200 and any(w["name"] == wrk01_plan["worker_name"] and w["status"] == "ONLINE"
                                     for w in workers):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the remote worker is not ONLINE:\n{log.read_text()[-3000:]}", pytrace=False)
        yield log
    finally:
        stop_groups([proc], WORKER_STOP_SECONDS)


# --------------------------------------------------------------------------- the person's CLI


def _person_env(home: Path, **settings: str) -> dict[str, str]:
    """The workstation's environment: PREFECT_HOME (%USERPROFILE%\\.prefect there) and what `settings` adds."""
    return clean_env(PREFECT_HOME=str(home), COLUMNS="250", **settings)


def _cli(env: dict, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([prefect_bin(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    assert PERSON_PASSWORD not in proc.stdout + proc.stderr, f"prefect {args[0]} printed the person's password"
    return proc


def _shown(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def workstation(front, enclave_ca, tmp_path_factory) -> Path:
    """A Prefect home with the README's profile `enclave`: the URL and the CA file, nothing secret."""
    home = tmp_path_factory.mktemp("workstation") / ".prefect"
    env = _person_env(home)
    for args in (("profile", "create", "enclave"),
                 ("--profile", "enclave", "config", "set", f"PREFECT_API_URL={front.url}/api",
                  f"PREFECT_API_SSL_CERT_FILE={enclave_ca[0]}")):
        proc = _cli(env, home.parent, *args)
        assert proc.returncode == 0, _shown(proc)
    return home


def _session(workstation: Path, websocket_header: bool = True) -> dict[str, str]:
    """What the README's prompt leaves in the person's session: the auth string and, unless told otherwise, the same
    credential as the header Prefect adds to websocket upgrades (`--watch` streams events and logs)."""
    extra = {"PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"Authorization": _basic(PERSON)})} if websocket_header else {}
    return _person_env(workstation, PREFECT_API_AUTH_STRING=PERSON, **extra)


@pytest.fixture(scope="module")
def shipped(roles_server, front, remote_worker, workstation, share) -> dict[str, subprocess.CompletedProcess]:
    """`prefect profile use enclave`, then `prefect deploy --all` in the project on the share, as the person."""
    env = _session(workstation)
    front.reset()
    done = {"use": _cli(env, share, "profile", "use", "enclave")}
    if done["use"].returncode == 0:
        done["deploy"] = _cli(env, share, "--no-prompt", "deploy", "--all")
    return dict(done, seen=front.reset())


def test_a_person_ships_a_flow_from_the_share_and_follows_it_to_completed(
        roles_server, front, remote_worker, wrk01_plan, workstation, share, shipped):
    env = _session(workstation)
    used, deployed = shipped["use"], shipped.get("deploy")
    assert used.returncode == 0 and "Connected to Prefect server using profile 'enclave'" in used.stdout, _shown(used)
    assert deployed.returncode == 0, _shown(deployed)
    status, deployment = roles_server.api("GET", "/deployments/name/nightly-etl/nightly")
    assert status == 200, deployment
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(share)}}], deployment["pull_steps"]
    assert (deployment["work_pool_name"], deployment["work_queue_name"]) == (wrk01_plan["pool"], "nightly")

    ran = _cli(env, share, "deployment", "run", "nightly-etl/nightly", "--watch", "--watch-timeout", "150",
               timeout=180)
    assert ran.returncode == 0 and "Flow run finished successfully in 'Completed'" in ran.stdout, _shown(ran)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", ran.stdout).group(1)
    status, run = roles_server.api("GET", f"/flow_runs/{run_id}")
    assert status == 200 and run["state"]["type"] == "COMPLETED", run
    assert run["parameters"] == {"day": "2025-01-31"}
    assert run_id in remote_worker.read_text(), remote_worker.read_text()[-3000:]
    assert "prefect.flow-run.pull-step.executed" in ran.stdout, _shown(ran)

    listed = _cli(env, share, "flow-run", "ls", "--flow-name", "nightly-etl")
    assert listed.returncode == 0, _shown(listed)
    [row] = [line for line in listed.stdout.splitlines() if run_id in line]
    assert "COMPLETED" in row and run["name"] in row, listed.stdout
    # The worker ran the code on the share: the flow logged its own file, which only the pull step leads to (the
    # worker's own directory holds no code).
    ran_from = str((share / "flows" / "nightly.py").resolve())
    logs = _cli(env, share, "flow-run", "logs", run_id)
    assert logs.returncode == 0 and f"nightly-etl for 2025-01-31 ran {ran_from}" in logs.stdout, _shown(logs)

    # On the wire: every request passed with one of the two credentials, the person's with theirs, websocket upgrades
    # of the watch (events and logs) included.
    seen = shipped["seen"] + front.reset()
    assert [(s.method, s.path) for s in seen if s.status == 401] == []
    person = [s for s in seen if s.authorization == _basic(PERSON)]
    assert {s.authorization for s in seen} == {_basic(PERSON), _basic(WORKER)}
    assert {"/api/events/out", "/api/logs/out"} <= {s.path for s in person if s.upgrade and s.status == 101}, \
        [(s.path, s.status) for s in person if s.upgrade]
    assert any(s.method == "POST" and s.path == "/api/deployments/" for s in person)
    assert any(s.method == "POST" and s.path.endswith("/create_flow_run") for s in person)


@pytest.mark.parametrize("case", ["no credential", "wrong password", "no CA file"])
def test_the_cli_without_the_persons_credential_or_the_ca_is_refused_and_says_so(front, enclave_ca, tmp_path, case):
    settings = {"PREFECT_API_URL": f"{front.url}/api", "PREFECT_API_SSL_CERT_FILE": str(enclave_ca[0]),
                "PREFECT_API_AUTH_STRING": PERSON}
    if case == "no credential":
        del settings["PREFECT_API_AUTH_STRING"]
    elif case == "wrong password":
        settings["PREFECT_API_AUTH_STRING"] = PERSON + "x"
    else:
        del settings["PREFECT_API_SSL_CERT_FILE"]
    front.reset()
    started = time.monotonic()
    proc = _cli(_person_env(tmp_path / ".prefect", **settings), tmp_path, "flow-run", "ls", timeout=90)
    took = time.monotonic() - started
    shown = proc.stdout + proc.stderr
    assert proc.returncode != 0, _shown(proc)
    seen = [s for s in front.reset() if s.authorization != _basic(WORKER)]  # the worker polls beside it
    if case == "no CA file":
        assert "CERTIFICATE_VERIFY_FAILED" in shown, _shown(proc)
        assert seen == [], "a request passed the TLS handshake without the CA file"
    else:
        assert "401 Unauthorized" in shown, _shown(proc)
        assert seen and all(s.status == 401 for s in seen), [(s.path, s.status) for s in seen]
        # The client does not retry a 401: one refused logon per command (each counts towards the domain's lockout).
        assert len(seen) == 1, [(s.method, s.path) for s in seen]
    assert took < 60, took


def test_watching_without_the_websocket_header_stops_at_once(roles_server, front, workstation, share, shipped):
    """The auth string alone: Prefect's log and event subscribers send no Authorization header on their websocket
    upgrade (docs/architecture.md, "What Prefect's clients send"), so behind IIS Basic `--watch` is refused and stops,
    saying the stream closed; the REST calls pass and the run is created (scheduled an hour ahead here, so that no
    worker starts it)."""
    assert shipped.get("deploy") is not None and shipped["deploy"].returncode == 0, _shown(shipped["use"])
    front.reset()
    ran = _cli(_session(workstation, websocket_header=False), share, "deployment", "run", "nightly-etl/nightly",
               "--watch", "--start-in", "in 1 hour", timeout=90)
    seen = [s for s in front.reset() if s.authorization != _basic(WORKER)]
    created = re.search(r"UUID: ([0-9a-f-]{36})", ran.stdout)
    try:
        assert ran.returncode == 1 and "stream closed unexpectedly" in ran.stdout, _shown(ran)
        upgrades = [s for s in seen if s.upgrade]
        assert upgrades and all(s.status == 401 and not s.authorization for s in upgrades), \
            [(s.path, s.status, bool(s.authorization)) for s in upgrades]
        rest = [s for s in seen if not s.upgrade]
        assert rest and all(s.status < 400 and s.authorization == _basic(PERSON) for s in rest), \
            [(s.method, s.path, s.status) for s in rest]
        assert created, _shown(ran)
    finally:
        if created:
            roles_server.api("DELETE", f"/flow_runs/{created.group(1)}")

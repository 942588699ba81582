"""What playbooks/files/redis_check.ps1 reads from Redis, asked of Debian's real redis-server (7.0): the replies it
parses and the error texts the simulated host's stand-in of the script returns (tests/roles/sim_verify.py
verify_redis_check) are Redis's own; the preflight's own question from the control node (plugins/action/redis_info.py)
runs against the same server. The script speaks RESP2 over one TCP connection: AUTH, INFO server, INFO cluster,
COMMAND INFO XAUTOCLAIM."""
from __future__ import annotations

import importlib.util
import re
import socket

import pytest

from ha import RedisError, RedisServer, _read_reply
from servers import REPO

STANDIN = (REPO / "tests" / "roles" / "sim_verify.py").read_text()


def _exchange(redis: RedisServer, *commands: tuple[str, ...]) -> list:
    """The commands on one connection, as the script sends them (no AUTH unless one of them is)."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        stream = sock.makefile("rwb")
        for cmd in commands:
            stream.write(b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in cmd))
        stream.flush()
        return [_read_reply(stream) for _ in commands]


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-check")).start()
    yield server
    server.stop()


def test_the_replies_the_script_parses(redis):
    auth, server, cluster, known, unknown = _exchange(
        redis, ("AUTH", redis.password), ("INFO", "server"), ("INFO", "cluster"), ("COMMAND", "INFO", "XAUTOCLAIM"),
        ("COMMAND", "INFO", "NOSUCHCOMMAND"))
    assert auth == "OK"
    version = re.search(r"(?m)^redis_version:(\S+)", server).group(1)
    assert tuple(int(p) for p in version.split(".")[:2]) >= (6, 2), version
    assert re.search(r"(?m)^cluster_enabled:0", cluster) and not re.search(r"(?m)^cluster_enabled:1", cluster)
    # One entry per command asked for: the command's description, or nil (the script's xautoclaim false).
    assert len(known) == 1 and known[0] is not None and known[0][0] == "xautoclaim"
    assert unknown == [None]


def test_the_stand_in_returns_redis_own_error_texts(redis):
    wrong, = _exchange(redis, ("AUTH", "not-the-password"))
    no_auth, = _exchange(redis, ("INFO", "server"))
    assert isinstance(wrong, RedisError) and isinstance(no_auth, RedisError)
    # A Redis without a password, given one: AUTH is refused (the password is set again on the same connection).
    replies = _exchange(redis, ("AUTH", redis.password), ("CONFIG", "SET", "requirepass", ""), ("AUTH", "x"),
                        ("CONFIG", "SET", "requirepass", redis.password))
    assert replies[1] == "OK" and replies[3] == "OK", replies
    without = replies[2]
    assert isinstance(without, RedisError)
    assert str(without).startswith("ERR AUTH <password> called without any password configured for the default user.")
    assert redis.command("PING") == "PONG"
    for reply in (wrong, no_auth, without):
        assert f'"Redis answered: {reply}"' in STANDIN or f'"{reply}"' in STANDIN, str(reply)


def test_the_control_nodes_question_reads_the_same(redis):
    """plugins/action/redis_info.py (the preflight's question from the control node) against the same Redis: usable
    with the password, Redis's own refusal without the right one, unreachable on a port where nothing listens."""
    spec = importlib.util.spec_from_file_location("enclave_redis_info", REPO / "plugins" / "action" / "redis_info.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    good = module.redis_info("127.0.0.1", redis.port, redis.password, 5)
    assert good["reachable"] and good["error"] == "" and not good["cluster_enabled"] and good["xautoclaim"], good
    assert good["version"] == re.search(r"(?m)^redis_version:(\S+)", redis.command("INFO", "server")).group(1)
    wrong = module.redis_info("127.0.0.1", redis.port, "not-the-password", 5)
    assert wrong["reachable"] and wrong["error"].startswith("Redis answered: WRONGPASS"), wrong
    assert module.redis_info("127.0.0.1", redis.port, "", 5)["error"] == "Redis answered: NOAUTH Authentication required."
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        away = module.redis_info("127.0.0.1", port, redis.password, 2)
    assert not away["reachable"] and "no connection to 127.0.0.1:%d from the control node" % port in away["error"], away
    assert redis.password not in repr([good, wrong, away])

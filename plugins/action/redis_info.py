# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for enclave.prefect.redis_info: runs on the control node (documentation in plugins/modules/redis_info.py).

The same questions as playbooks/files/redis_check.ps1 asks from a server host, over one TCP connection in the Redis
protocol (RESP2): AUTH (with a password), INFO server, INFO cluster, COMMAND INFO XAUTOCLAIM."""

from __future__ import annotations

import re
import socket

from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "host": {"type": "str", "required": True},
    "port": {"type": "int", "default": 6379},
    "password": {"type": "str", "default": "", "no_log": True},
    "timeout": {"type": "float", "default": 5.0},
}


class RedisReplyError(Exception):
    """An error reply of Redis (its text never holds the password)."""


def _command(words):
    out = b"*%d\r\n" % len(words)
    for word in words:
        data = word.encode("utf-8")
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


def _reply(stream):
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2].decode("utf-8", "replace")
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisReplyError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise OSError("Redis closed the connection")
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_reply(stream) for _index in range(size)]
    raise OSError("not a Redis reply: %r" % line[:40])


def redis_info(host, port, password="", timeout=5.0):
    """{reachable, version, cluster_enabled, xautoclaim, error}: reachable is False when no TCP connection opened (the
    name does not resolve, nothing listens, or nothing answered in time); error says why, or what Redis answered."""
    result = {"host": host, "port": port, "reachable": False, "version": "", "cluster_enabled": False,
              "xautoclaim": False, "error": ""}
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        result["error"] = "no connection to %s:%d from the control node: %s" % (host, port, exc.strerror or exc)
        return result
    result["reachable"] = True
    try:
        with sock, sock.makefile("rwb") as stream:
            commands = ([["AUTH", password]] if password else []) + [
                ["INFO", "server"], ["INFO", "cluster"], ["COMMAND", "INFO", "XAUTOCLAIM"]]
            replies = []
            for words in commands:
                stream.write(_command(words))
                stream.flush()
                replies.append(_reply(stream))
    except RedisReplyError as exc:
        result["error"] = "Redis answered: %s" % exc
        return result
    except (OSError, ValueError) as exc:
        result["error"] = "Redis at %s:%d did not answer as Redis does: %s" % (host, port, exc)
        return result
    server, cluster, command = replies[-3:]
    found = re.search(r"(?m)^redis_version:(\S+)", server or "")
    result["version"] = found.group(1) if found else ""
    result["cluster_enabled"] = bool(re.search(r"(?m)^cluster_enabled:1", cluster or ""))
    result["xautoclaim"] = bool(command) and command[0] is not None
    return result


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        result.update(redis_info(args["host"], args["port"], args["password"], args["timeout"]), changed=False)
        return result

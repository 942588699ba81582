# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Format checks for role input that argument_specs cannot express.

ansible-core's role argument validation turns a mapping given for a ``str`` option into its text and goes
on, so a service account named ``{'x': 1}`` would reach the host. Each role hands its values to this filter
in its controller-side validation task, before any task reaches a host.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

DOCUMENTATION = r"""
name: input_errors
short_description: Messages for role input values of the wrong kind or format
version_added: 0.1.0
description:
  - Takes a list of C([variable name, kind, value]) triples and returns one message per value that is not of its
    kind; an empty list means all are good. Used by the roles' validation tasks before any host is touched.
  - "Kinds: C(win_path) (absolute, C(C:\\...), no C(%) or characters Windows forbids), C(win_root) (a
    C(win_path) that is not a drive root or an OS directory), C(unc_path), C(win_or_unc_path), C(url)
    (http or https, no spaces or quotes), C(url_or_path) (a URL or a path such as C(/api)), C(https_url), C(sha256),
    C(account) (C(name), C(.\\name), C(DOMAIN\\name), C(DOMAIN\\gmsa$)), C(service_name),
    C(plain_name) (letters, digits, C(.), C(_), C(-)), C(version) (C(3.8.8)), C(python_minor) (C(3.12)), C(file_name)."
  - A kind ending in C(?) also accepts an empty string.
positional: _input
options:
  _input:
    description: List of C([name, kind, value]).
    type: list
    elements: list
    required: true
"""

EXAMPLES = r"""
- name: Input is well formed
  ansible.builtin.assert:
    that: errors | length == 0
    fail_msg: "{{ errors | join('; ') }}"
  vars:
    errors: "{{ [['prefect_root', 'win_path', prefect_root], ['python_installer_sha256', 'sha256?', python_installer_sha256]]
                | enclave.prefect.input_errors }}"
"""

RETURN = r"""
_value:
  description: One message per bad value, naming the variable, what it must be and what it got.
  type: list
  elements: str
"""

_WIN_FORBIDDEN = r'<>:"/|?*%\x00-\x1f'
# Characters a Windows account name may not contain (Microsoft: "User name" naming rules), plus '@' and '%'.
_ACCOUNT_FORBIDDEN = r'"/\\\[\]:;|=,+*?<>@%\x00-\x1f'

# An absolute Windows path; win_root adds its own checks (_root_problem) on top.
_WIN_ABSOLUTE = re.compile(r"^[A-Za-z]:\\(?:[^%s\\]+(?:\\[^%s\\]+)*\\?)?$" % (_WIN_FORBIDDEN, _WIN_FORBIDDEN))

KINDS = {
    "win_path": (_WIN_ABSOLUTE,
                 "an absolute Windows path such as C:\\Prefect (no %, quotes or <>|?*)"),
    "win_root": (_WIN_ABSOLUTE,
                 "an absolute Windows path of a directory of its own such as C:\\Prefect (no %, quotes or <>|?*)"),
    "unc_path": (re.compile(r"^\\\\[A-Za-z0-9][A-Za-z0-9._-]*\\[^%s\\]+(?:\\[^%s\\]+)*\\?$" % (_WIN_FORBIDDEN, _WIN_FORBIDDEN)),
                 "a UNC path such as \\\\fileserver\\software\\enclave-prefect"),
    "win_or_unc_path": (re.compile(r"^(?:[A-Za-z]:|\\\\[A-Za-z0-9][A-Za-z0-9._-]*)\\(?:[^%s\\]+(?:\\[^%s\\]+)*\\?)?$"
                                   % (_WIN_FORBIDDEN, _WIN_FORBIDDEN)),
                        "an absolute Windows path such as D:\\sources\\sxs or a UNC path such as \\\\fileserver\\sxs"),
    "url": (re.compile(r"^https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?(?:/[^\s\"'<>\\^`{|}]*)?$"),
            "an http:// or https:// URL without spaces or quotes"),
    "url_or_path": (re.compile(r"^(?:https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?)?/[^\s\"'<>\\^`{|}]*$"),
                    "an http:// or https:// URL, or a path such as /api, without spaces or quotes"),
    "https_url": (re.compile(r"^https://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?(?:/[^\s\"'<>\\^`{|}]*)?$"),
                  "an https:// URL without spaces or quotes"),
    "sha256": (re.compile(r"^[0-9A-Fa-f]{64}$"), "a SHA256 digest of 64 hexadecimal characters"),
    "account": (re.compile(r"^(?:\.\\|[A-Za-z0-9][A-Za-z0-9. _-]{0,62}\\)?[^%s.\s$](?:[^%s]{0,62}[^%s\s])?$"
                           % (_ACCOUNT_FORBIDDEN, _ACCOUNT_FORBIDDEN, _ACCOUNT_FORBIDDEN)),
                "an account name: name, .\\name, DOMAIN\\name or DOMAIN\\gmsa$"),
    "service_name": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"),
                     "a Windows service name of letters, digits, '.', '_' or '-' (at most 80)"),
    "plain_name": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"), "letters, digits, '.', '_' or '-' (no spaces or quotes)"),
    "version": (re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc|\.dev|\.post)\d+)?$"), "a version such as 3.8.8"),
    "python_minor": (re.compile(r"^3\.\d{1,2}$"), "a Python minor version such as 3.12"),
    "file_name": (re.compile(r"^[^%s\\]+$" % _WIN_FORBIDDEN), "a file name without a directory, %, quotes or <>|?*"),
}


# Directories whose access rules the roles must never replace: purging the broad groups from one of them would lock
# every non-administrator out of the drive, the applications or the profiles.
_OS_DIRS = ("windows", "programdata", "program files", "program files (x86)", "users")


def win_path_key(path):
    """A Windows path as Windows compares it: case-insensitive, one separator, no trailing separator."""
    text = re.sub(r"\\+", r"\\", str(path).replace("/", "\\")).rstrip("\\").lower()
    return text + "\\" if re.fullmatch(r"[a-z]:", text) else text


def win_path_relation(path, other):
    """How a Windows path stands to another: 'same', 'inside' (path is under other), 'contains' or 'apart'."""
    a, b = win_path_key(path), win_path_key(other)
    if a == b:
        return "same"
    if a.startswith(b.rstrip("\\") + "\\"):
        return "inside"
    if b.startswith(a.rstrip("\\") + "\\"):
        return "contains"
    return "apart"


def win_paths_not_inside(paths, root):
    """The paths that are not strictly under root, compared as Windows compares them."""
    return [path for path in paths if win_path_relation(path, root) != "inside"]


def _segment_problem(text):
    for segment in text.split("\\")[1:]:
        if segment in (".", ".."):
            return "without '.' or '..' segments (Windows resolves them to another directory)"
        if segment and segment[-1] in ". ":
            return "without a segment ending in a dot or a space (Windows strips them)"
    return None


# Names Windows keeps for devices, whatever the extension (Microsoft: "Naming Files, Paths, and Namespaces").
_DEVICES = re.compile(r"^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(?:\..*)?$", re.IGNORECASE)
# An 8.3 short name (PROGRA~1): the same directory as a long name the checks below would refuse.
_SHORT_NAME = re.compile(r"~[0-9]")


def _name_problem(text):
    segments = [segment for segment in text.split("\\") if segment]
    for segment in segments[1:] if re.match(r"^[A-Za-z]:", text) or text.startswith("\\\\") else segments:
        if _DEVICES.match(segment.rstrip(" .")):
            return "without a device name such as CON, NUL, COM1 or LPT1 (Windows opens the device)"
        if _SHORT_NAME.search(segment):
            return "with long names, not 8.3 short names such as PROGRA~1 (they hide which directory it is)"
    return None


def _root_problem(text):
    parts = win_path_key(text).split("\\")
    if len(parts) < 2 or parts[1] == "":
        return "not a drive root"
    if (parts[1] == "windows" or (len(parts) == 2 and parts[1] in _OS_DIRS) or parts[1:3] == ["programdata", "microsoft"]
            or (len(parts) == 3 and parts[1] == "users")):
        return ("not Windows or a directory in it, nor ProgramData, ProgramData\\Microsoft or a directory in it, Program "
                "Files, Program Files (x86), Users or a profile in it")
    return None


def _check(name, kind, value):
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if kind not in KINDS:
        raise ValueError("input_errors: unknown kind %r for %s" % (kind, name))
    pattern, what = KINDS[kind]
    if isinstance(value, (Mapping, list, tuple, set, bool)) or value is None or not isinstance(value, (str, int, float)):
        kind_of = ("mapping" if isinstance(value, Mapping) else "list" if isinstance(value, (list, tuple, set))
                   else "boolean" if isinstance(value, bool) else "null" if value is None else type(value).__name__)
        return "%s must be %s, not a %s (got %r)" % (name, what, kind_of, value)
    text = str(value)
    if optional and text == "":
        return None
    if kind == "account" and text.count("$") > (1 if text.endswith("$") else 0):
        return "%s must be %s ('$' only at the end of a gMSA; got %r)" % (name, what, text)
    # fullmatch: a pattern's '$' alone would also accept a trailing line break.
    if not pattern.fullmatch(text):
        return "%s must be %s (got %r)" % (name, what, text)
    if kind in ("url", "url_or_path", "https_url"):
        port = re.match(r"^https?://(?:\[[^\]]*\]|[^/:]*):(\d+)", text)
        if port and not 1 <= int(port.group(1)) <= 65535:
            return "%s must be %s, with a port from 1 to 65535 (got %r)" % (name, what, text)
    if kind == "file_name" and text.strip(" .") == "":
        return "%s must be %s, not '.' or '..' (got '%s')" % (name, what, text)
    if kind in ("win_path", "win_root", "unc_path", "win_or_unc_path"):
        problem = _segment_problem(text)
        if problem:
            return "%s must be %s, %s (got '%s')" % (name, what, problem, text)
    if kind in ("win_path", "win_root", "unc_path", "win_or_unc_path", "file_name"):
        problem = _name_problem(text)
        if problem:
            return "%s must be %s, %s (got '%s')" % (name, what, problem, text)
    if kind == "win_root":
        problem = _root_problem(text)
        if problem:
            return "%s must be %s, %s: the roles replace its access rules (got '%s')" % (name, what, problem, text)
    return None


# Accounts that must never run a Prefect service, a backup task or the proxy's application pool: built-in and
# well-known privileged principals and the administrative groups (a group is never a logon account either).
PRIVILEGED_ACCOUNTS = {"administrator", "administrators", "localsystem", "local system", "system", "networkservice",
                       "network service", "localservice", "local service", "domain admins", "enterprise admins",
                       "schema admins", "account operators", "backup operators", "server operators", "guest",
                       "everyone", "authenticated users", "users", "domain users"}


def privileged_account(account):
    """Whether an account name names a privileged principal (case, surrounding spaces and a trailing '$' aside)."""
    text = str(account).strip()
    domain, _sep, base = text.rpartition("\\")
    base = base.strip().rstrip("$").lower()
    return (base in PRIVILEGED_ACCOUNTS or base.startswith("s-1-5-32-") or base in ("s-1-5-18", "s-1-5-19", "s-1-5-20")
            or domain.strip().lower() in ("nt authority", "builtin"))


# ansible-core 2.16 to 2.18 name the class of a value read from YAML in argument-spec errors ("is of type <class
# 'ansible.parsing.yaml.objects.AnsibleUnicode'>"), 2.19 its plain type ("is of type str").
_CLASS = re.compile(r"<class '(?:ansible\.parsing\.yaml\.objects\.Ansible(Unicode|Mapping|Sequence)|(\w+))'>")
_YAML_TYPES = {"Unicode": "str", "Mapping": "dict", "Sequence": "list"}


def argument_errors(messages):
    """Argument-spec error messages with plain type names, as ansible-core 2.19 writes them, whatever the core."""
    return [_CLASS.sub(lambda found: _YAML_TYPES[found.group(1)] if found.group(1) else found.group(2), str(message))
            for message in messages or []]


def input_errors(triples):
    errors = []
    for item in triples or []:
        name, kind, value = item
        message = _check(name, kind, value)
        if message:
            errors.append(message)
    return errors


class FilterModule:
    def filters(self):
        return {"input_errors": input_errors, "argument_errors": argument_errors, "win_path_relation": win_path_relation,
                "win_paths_not_inside": win_paths_not_inside, "privileged_account": privileged_account}

# modules:
# NSSM 2.24-101-g897c7ad, the bundle's build, as files/nssm_settings.ps1 drives it (simhost.py PARTS; it stands in for
# no module of its own, so the list above is empty): what `nssm install`, `set`, `reset` and `get` leave in a service's
# Parameters key and print. Read in NSSM's source at 897c7ad (settings.cpp settings[] and setting_set_*/get_setting,
# registry.cpp create_parameters, service.cpp pre_install_service/pre_edit_service, nssm.cpp str_number) and compared
# with the binary itself, run under Wine, by tests/roles/test_nssm_real.py. The body (sim_module.py) calls these as
# globals; the tests import this file as a plain module, so it reads no state and imports nothing.
# A Parameters key is a dict {value name: data}: int for REG_DWORD, str for REG_EXPAND_SZ, list of str for
# REG_MULTI_SZ; nssm_type(name) is the type NSSM writes. The AppExit subkey is a dict {exit code, '' for Default: action}.

# settings.cpp settings[]: the registry type of each App* setting and its default. None: no default (NULL), so that
# `nssm reset` deletes the value where a default of "" writes it as "". A number's default is the value `nssm set`
# deletes (setting_set_number: `if (default_value && number == default)`; a zero default is a NULL pointer there, so 0
# is written), and what `nssm get` prints for an absent value (get_setting presets it).
NSSM_SETTINGS = {
    "Application": ("REG_EXPAND_SZ", ""), "AppParameters": ("REG_EXPAND_SZ", ""), "AppDirectory": ("REG_EXPAND_SZ", ""),
    "AppEnvironment": ("REG_MULTI_SZ", None), "AppEnvironmentExtra": ("REG_MULTI_SZ", None),
    "AppNoConsole": ("REG_DWORD", 0), "AppRestartDelay": ("REG_DWORD", 0),
    "AppStdin": ("REG_EXPAND_SZ", None), "AppStdinShareMode": ("REG_DWORD", 2),  # FILE_SHARE_WRITE
    "AppStdinCreationDisposition": ("REG_DWORD", 3), "AppStdinFlagsAndAttributes": ("REG_DWORD", 128),  # OPEN_EXISTING
    "AppStdout": ("REG_EXPAND_SZ", None), "AppStdoutShareMode": ("REG_DWORD", 3),  # FILE_SHARE_READ | FILE_SHARE_WRITE
    "AppStdoutCreationDisposition": ("REG_DWORD", 4), "AppStdoutFlagsAndAttributes": ("REG_DWORD", 128),  # OPEN_ALWAYS
    "AppStdoutCopyAndTruncate": ("REG_DWORD", 0),
    "AppStderr": ("REG_EXPAND_SZ", None), "AppStderrShareMode": ("REG_DWORD", 3),
    "AppStderrCreationDisposition": ("REG_DWORD", 4), "AppStderrFlagsAndAttributes": ("REG_DWORD", 128),
    "AppStderrCopyAndTruncate": ("REG_DWORD", 0),
    "AppStopMethodSkip": ("REG_DWORD", 0), "AppStopMethodConsole": ("REG_DWORD", 1500),
    "AppStopMethodWindow": ("REG_DWORD", 1500), "AppStopMethodThreads": ("REG_DWORD", 1500),
    "AppKillProcessTree": ("REG_DWORD", 1), "AppThrottle": ("REG_DWORD", 1500), "AppRedirectHook": ("REG_DWORD", 0),
    "AppRotateFiles": ("REG_DWORD", 0), "AppRotateOnline": ("REG_DWORD", 0), "AppRotateSeconds": ("REG_DWORD", 0),
    "AppRotateBytes": ("REG_DWORD", 0), "AppRotateBytesHigh": ("REG_DWORD", 0), "AppRotateDelay": ("REG_DWORD", 0),
    "AppTimestampLog": ("REG_DWORD", 0),
}
# The value NSSM uses when a setting is absent from the Parameters key: `nssm set` to a non-zero, non-empty default
# DELETES the value (setting_set_number; setting_set_string: `if (default_value && _tcslen(default_value) &&
# str_equiv(...))`, which no App* string setting meets), a zero default is written as 0.
NSSM_DEFAULTS = {name: default for name, (_kind, default) in NSSM_SETTINGS.items()
                 if default is not None and name != "Application"}
# exit_action_strings[] (service.cpp); AppExit's default action, which `nssm install` writes (create_exit_action).
NSSM_EXIT_ACTIONS = ("Restart", "Ignore", "Exit", "Suicide")
NSSM_EXIT_DEFAULT = "Restart"
# What `nssm install` registers besides the Parameters key (service.cpp install_service): an automatic, own-process
# service as LocalSystem, whose ImagePath is nssm.exe's own path through PathQuoteSpaces.
NSSM_INSTALLED_SERVICE = {"ObjectName": "LocalSystem", "Start": 2, "Type": 16}
NSSM_START_TYPES = {"SERVICE_AUTO_START": 2, "SERVICE_DELAYED_AUTO_START": 2, "SERVICE_DEMAND_START": 3,
                    "SERVICE_DISABLED": 4}


def nssm_message(result, key, service):
    """What set_setting prints for nssm_set's result (messages.mc): on stdout for 1 and 0, on stderr for -1."""
    return {1: 'Set parameter "%s" for service "%s".' % (key, service),
            0: 'Reset parameter "%s" for service "%s" to its default.' % (key, service),
            -1: 'Error setting parameter "%s" for service "%s"!' % (key, service)}[result]


def nssm_manages(registry):
    """Whether NSSM takes the service for one of its own: its Application is not empty (service.cpp pre_edit_service
    marks it native otherwise, and then refuses every App* setting, `get` too, with exit code 1)."""
    return bool(registry.get("Application"))


def nssm_native_message(key):
    return 'Parameter "%s" is only valid for services managed by NSSM!' % key


def nssm_type(key):
    """The registry type NSSM writes for a Parameters value ('REG_EXPAND_SZ', 'REG_DWORD', 'REG_MULTI_SZ'); None for
    a name that is no NSSM setting."""
    return NSSM_SETTINGS.get(key, (None, None))[0]


def nssm_number(text):
    """nssm.cpp str_number: the Microsoft C runtime's _tcstoul(text, &bogus, 0) on Windows' 32-bit unsigned long, which
    must consume the whole text. None when it does not (nssm set then fails). Leading white space and a sign are read,
    base 0 (0x hex, a leading 0 octal); a negative number wraps, one out of range is ULONG_MAX. An empty text reads as
    0 (no digits: the end pointer stays at the text's end)."""
    i, n = 0, len(text)
    while i < n and text[i] in " \t\n\r\f\v":
        i += 1
    negative = i < n and text[i] == "-"
    if i < n and text[i] in "+-":
        i += 1
    base = 10
    if text[i:i + 2].lower() == "0x" and i + 2 < n and text[i + 2].lower() in "0123456789abcdef":
        base, i = 16, i + 2
    elif text[i:i + 1] == "0":
        base = 8
    digits = "0123456789abcdef"[:base]
    start = i
    while i < n and text[i].lower() in digits:
        i += 1
    if i == start:
        # No number: the end pointer is the text itself, which must be empty to be accepted.
        return 0 if not text else None
    if i != n:
        return None
    value = int(text[start:i], base)
    if value > 0xFFFFFFFF:
        return 0xFFFFFFFF
    return (-value) & 0xFFFFFFFF if negative else value


def _nssm_join(key, value):
    """The value pre_edit_service builds from the arguments after the setting's name: one argument as it is, several
    joined by ' ' (by CRLF for the environment settings, ADDITIONAL_CRLF)."""
    if isinstance(value, (list, tuple)):
        return ("\r\n" if nssm_type(key) == "REG_MULTI_SZ" else " ").join(str(v) for v in value)
    return str(value)


def nssm_set(registry, key, value):
    """`nssm set <service> <key> <value>` on the Parameters key (a dict, changed in place). value: the one argument
    (str or number), or the list of arguments. Returns what set_setting reports: 1 'Set parameter', 0 'Reset
    parameter ... to its default' (the value was deleted), -1 'Error setting parameter' (exit code 6, nothing
    changed)."""
    kind, default = NSSM_SETTINGS.get(key, (None, None))
    text = _nssm_join(key, value)
    if kind == "REG_DWORD":
        number = nssm_number(text)
        if number is None:
            return -1
        if default and number == default:
            registry.pop(key, None)
            return 0
        registry[key] = number
        return 1
    if kind == "REG_MULTI_SZ":
        # setting_set_environment: an empty value deletes; otherwise one string per line (unformat_double_null).
        # The ':', '+' and '-' prefixes (replace, add, remove) are not modelled: the role writes the environment itself.
        if not text:
            registry.pop(key, None)
            return 0
        registry[key] = [line for line in text.replace("\r\n", "\n").split("\n") if line]
        return 1
    # setting_set_string: written as given, an empty string too (the value is a string, not NULL).
    if default and text.lower() == default.lower():
        registry.pop(key, None)
        return 0
    registry[key] = text
    return 1


def nssm_reset(registry, key):
    """`nssm reset <service> <key>` (the value is NULL): numbers and settings without a default are deleted (0,
    'Reset'); a string setting whose default is "" is written as "" (1, 'Set parameter')."""
    kind, default = NSSM_SETTINGS.get(key, (None, None))
    if kind == "REG_EXPAND_SZ" and default is not None:
        registry[key] = default
        return 1
    registry.pop(key, None)
    return 0


def nssm_get(registry, key):
    """`nssm get <service> <key>` as the real one prints it (without the line end): settings.cpp get_setting presets
    the value with the default before registry.cpp get_number leaves it untouched for an absent value, so an absent
    value prints the default; an absent string without a default prints an empty line; the environment prints one
    NAME=value per line. Not used by the role's script (one nssm.exe per setting and service is slow); kept for
    contrast."""
    if key in registry:
        value = registry[key]
        return "\n".join(value) if isinstance(value, list) else str(value)
    default = NSSM_DEFAULTS.get(key, "")
    return "" if default is None else str(default)


def nssm_set_exit(actions, code, action):
    """`nssm set <service> AppExit <code> <action>` on the AppExit subkey (a dict, changed in place): code 'Default'
    (or '*' or '') is the key's default value ''. The action is one of NSSM_EXIT_ACTIONS, any case, stored as NSSM
    spells it. Returns 1 'Set', 0 'Reset' (the action is Restart, whatever the code: setting_set_exit_action compares
    with the default only), -1 on a bad code or action."""
    if code.lower() in ("default", "*", ""):
        name = ""
    elif nssm_number(code) is None or not code:
        return -1
    else:
        name = code
    spelled = next((a for a in NSSM_EXIT_ACTIONS if a.lower() == str(action).lower()), None)
    if spelled is None:
        return -1
    actions[name] = spelled
    return 0 if spelled == NSSM_EXIT_DEFAULT else 1


def nssm_reset_exit(actions, code):
    """`nssm reset <service> AppExit <code>`: a code's action is deleted; the default's is written as Restart (the
    default is kept explicitly). Both report 'Reset' (0)."""
    if code.lower() in ("default", "*", ""):
        actions[""] = NSSM_EXIT_DEFAULT
    else:
        actions.pop(code, None)
    return 0


def nssm_get_exit(actions, code="Default"):
    """`nssm get <service> AppExit <code>`: the code's own action, else the default's (registry.cpp get_exit_action)."""
    if code.lower() in ("default", "*", ""):
        return actions.get("", NSSM_EXIT_DEFAULT)
    return actions.get(str(nssm_number(code)), actions.get("", NSSM_EXIT_DEFAULT))


def nssm_app_directory(application):
    """The directory `nssm install` stores: the application's path up to its last '\\' or '/' (nssm.cpp
    strip_basename; 'C:\\' keeps its backslash, a bare file name gives '')."""
    i = max(application.rfind("\\"), application.rfind("/"))
    if i <= 0:
        return ""
    if application[i - 1] == ":":
        i += 1
    return application[:i]


def nssm_install(application, *arguments):
    """The Parameters key `nssm install <service> <application> [arguments...]` writes (registry.cpp create_parameters
    of a new service, nothing else being off its default): Application, AppParameters (the arguments joined by ' ',
    without quoting) and AppDirectory (the application's directory), all REG_EXPAND_SZ. The AppExit subkey gets
    {'': NSSM_EXIT_DEFAULT} (create_exit_action); the service NSSM_INSTALLED_SERVICE."""
    return {"Application": application, "AppParameters": " ".join(arguments),
            "AppDirectory": nssm_app_directory(application)}


def nssm_image_path(nssm_exe):
    """ImagePath as `nssm install` registers it: its own path, quoted when it holds a space (PathQuoteSpaces)."""
    return '"%s"' % nssm_exe if " " in nssm_exe else nssm_exe

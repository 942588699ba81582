"""argument_errors: the preflight's argument-spec errors read the same on every supported ansible-core."""
from __future__ import annotations

from ansible_collections.enclave.prefect.plugins.filter.input_errors import FilterModule, argument_errors

# As ansible-core 2.16 writes them for values read from YAML (playbooks/preflight.yml on .venv-core-2.16), and as 2.19.
CORE_216 = ("argument 'nssm_services_rotate_bytes' is of type <class 'ansible.parsing.yaml.objects.AnsibleUnicode'> and "
            "we were unable to convert to int: <class 'ansible.parsing.yaml.objects.AnsibleUnicode'> cannot be converted "
            "to an int")
CORE_219 = ("argument 'nssm_services_rotate_bytes' is of type str and we were unable to convert to int: str cannot be "
            "converted to an int")


def test_yaml_classes_read_as_their_plain_types():
    assert argument_errors([CORE_216]) == [CORE_219]
    assert argument_errors(["argument 'a' is of type <class 'ansible.parsing.yaml.objects.AnsibleMapping'> and we were "
                            "unable to convert to list",
                            "argument 'b' is of type <class 'ansible.parsing.yaml.objects.AnsibleSequence'> and we were "
                            "unable to convert to dict",
                            "argument 'c' is of type <class 'int'> and we were unable to convert to bool"]) == [
        "argument 'a' is of type dict and we were unable to convert to list",
        "argument 'b' is of type list and we were unable to convert to dict",
        "argument 'c' is of type int and we were unable to convert to bool"]


def test_messages_without_a_class_are_kept():
    kept = [CORE_219, "missing required arguments: prefect_version", "value of mode must be one of: a, b, got: <class>"]
    assert argument_errors(kept) == kept
    assert argument_errors(None) == [] and argument_errors([]) == []


def test_registered_as_a_filter():
    assert FilterModule().filters()["argument_errors"] is argument_errors

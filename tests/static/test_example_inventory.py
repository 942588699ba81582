"""The example inventory copied as README.md step 3 says (the directory, then vault.yml made from vault.yml.example
with its keys as they are) keeps connection.yml's Kerberos logon: ansible-inventory shows the principal, and no
password, for every host."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from toolchain import REPO, VENV_BIN

pytestmark = pytest.mark.static


def test_vault_example_copied_whole_keeps_the_kerberos_principal(tmp_path, ansible_env):
    inventory = tmp_path / "prefect-inventory"
    shutil.copytree(REPO / "inventories" / "example", inventory)
    # `ansible-vault create` with every key of the example pasted (encryption changes nothing the inventory reads).
    example = (inventory / "vault.yml.example").read_text()
    (inventory / "group_vars" / "all" / "vault.yml").write_text(example)
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list"], env=ansible_env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert hostvars
    connection = (inventory / "group_vars" / "all" / "connection.yml").read_text()
    principal = re.search(r"^ansible_user: (\S+)$", connection, re.M).group(1)
    for host, values in hostvars.items():
        assert values.get("ansible_psrp_auth") == "kerberos", host
        assert values.get("ansible_user") == principal, (host, values.get("ansible_user"))
        assert "ansible_password" not in values, host
    # The NTLM keys are there, commented out, for those who need them.
    assert re.search(r"^# ansible_user: ", example, re.M) and re.search(r"^# ansible_password: ", example, re.M)

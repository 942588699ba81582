"""Sphinx extension of scripts/docs.sh: the docsite builds offline and every reference inside it still resolves.

antsibull-docs writes references to the Ansible docsite (`common_return_values`, ...) and to other collections'
plugins as labels that Sphinx resolves through intersphinx, which needs docs.ansible.com. Offline, this extension
turns exactly those into plain links to docs.ansible.com (not reachable inside the enclave, but the text says where).
A role's option that lives in the common role (the collection-wide `prefect_*` facts, written `O(prefect_home)` in
every role's argument spec) links to the common role's entry (also from the common role's other entry points). Any other label that does not resolve is left to Sphinx,
which warns, and the build (`-W`) fails.
"""
from __future__ import annotations

import re

from docutils import nodes

DOCSITE = "https://docs.ansible.com/ansible/latest/"
# Labels of the Ansible docsite that antsibull-docs' templates use, and their pages.
ANSIBLE_DOCSITE = {
    "common_return_values": "reference_appendices/common_return_values.html",
    "action_plugins": "plugins/action.html",
    "ansible_configuration_settings": "reference_appendices/config.html",
}
OTHER_COLLECTION = re.compile(r"^ansible_collections\.(?P<ns>\w+)\.(?P<name>\w+)\.(?P<plugin>\w+)_(?P<type>module|[a-z]+)$")
ROLE_OPTION = re.compile(r"^ansible_collections\.enclave\.prefect\.(?P<role>\w+)_role__parameter-(?P<entry>[\w-]+)__(?P<option>\w+)$")
COMMON_OPTION = "ansible_collections.enclave.prefect.common_role__parameter-main__{option}"


def _link(uri: str, contnode: nodes.Node) -> nodes.reference:
    node = nodes.reference("", "", internal=False, refuri=uri)
    node.append(contnode)
    return node


def resolve(app, env, node, contnode):
    if node.get("refdomain") != "std" or node.get("reftype") != "ref":
        return None
    target = node.get("reftarget", "")
    if target in ANSIBLE_DOCSITE:
        return _link(DOCSITE + ANSIBLE_DOCSITE[target], contnode)
    role_option = ROLE_OPTION.match(target)
    if role_option:
        common = COMMON_OPTION.format(option=role_option["option"])
        labels = env.domains["std"].anonlabels  # option anchors are labels without a title
        if common != target and common in labels:
            docname, labelid = labels[common]
            node = nodes.reference("", "", internal=True,
                                   refuri=app.builder.get_relative_uri(node["refdoc"], docname) + "#" + labelid)
            node.append(contnode)
            return node
        return None
    other = OTHER_COLLECTION.match(target)
    if other and (other["ns"], other["name"]) != ("enclave", "prefect"):
        return _link(f"{DOCSITE}collections/{other['ns']}/{other['name']}/{other['plugin']}_{other['type']}.html", contnode)
    return None


def setup(app):
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

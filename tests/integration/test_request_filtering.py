"""IIS request filtering against the real Prefect API's routes: IIS's default hidden segments and denied extensions
answer 404 before the proxy handler (request filtering runs in BeginRequest, before URL Rewrite and ARR), so a Prefect
name such as a work pool "bin" or a flow "etl.config" would be unreachable. Every route of the pinned server's OpenAPI
document is filled with such names and judged by the request filtering the role's web.config gives the site.

The filter is modelled from the IIS documentation (Microsoft, "Request Filtering <requestFiltering>", hiddenSegments:
a whole path segment, case-insensitive, 404.8; fileExtensions: the extension of the URL's last segment, 404.7). The
defaults are IIS 10's applicationHost.config. What is not modelled: whether IIS also checks the extension of a middle
segment (undocumented); the role clears the list, so it does not matter for the site.
"""
from __future__ import annotations

import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

from servers import REPO

sys.path.insert(0, str(REPO / "tests" / "static"))
import webconfig  # noqa: E402  pylint: disable=wrong-import-position

# IIS 10 applicationHost.config, system.webServer/security/requestFiltering.
IIS_HIDDEN = ["web.config", "bin", "App_code", "App_GlobalResources", "App_LocalResources", "App_WebReferences", "App_Data",
              "App_Browsers"]
IIS_DENIED = [".asa", ".asax", ".ascx", ".master", ".skin", ".browser", ".sitemap", ".config", ".cs", ".csproj", ".vb",
              ".vbproj", ".webinfo", ".licx", ".resx", ".resources", ".mdb", ".vjsproj", ".java", ".jsl", ".ldb", ".dsdgm",
              ".ssdgm", ".lsad", ".ssmap", ".cd", ".dsprototype", ".lsaprototype", ".sdm", ".sdmDocument", ".mdf", ".ldf",
              ".ad", ".dd", ".ldd", ".sd", ".adprototype", ".lddprototype", ".exclude", ".refresh", ".compiled", ".msgx",
              ".vsdisco", ".rules"]
# Names Prefect accepts (prefect/types/names.py: flows, deployments, pools, queues allow dots; variables, blocks and
# artifact keys allow [a-z0-9-_]) that IIS's defaults refuse.
NAMES = ["bin", "app_data", "App_Code", "etl.config", "nightly.cs", "sales.mdb", "pricing.rules"]


def effective_filtering(web_config: str) -> tuple[list[str], list[str]]:
    """(hidden segments, denied extensions) of a site whose web.config is `web_config`, over IIS's defaults."""
    filtering = ET.fromstring(web_config).find("system.webServer/security/requestFiltering")
    hidden, denied = list(IIS_HIDDEN), list(IIS_DENIED)
    if filtering is None:
        return hidden, denied
    for tag, values, key in (("hiddenSegments", hidden, "segment"), ("fileExtensions", denied, "fileExtension")):
        section = filtering.find(tag)
        for child in list(section) if section is not None else []:
            if child.tag == "clear":
                values.clear()
            elif child.tag == "remove":
                values[:] = [v for v in values if v.lower() != child.get(key, "").lower()]
            elif child.tag == "add" and (tag == "hiddenSegments" or child.get("allowed", "true") == "false"):
                values.append(child.get(key, ""))
    return hidden, denied


def refused(path: str, hidden: list[str], denied: list[str]) -> str | None:
    """404.8 / 404.7 as IIS request filtering answers `path`, or None."""
    segments = [unquote(s) for s in path.split("?", 1)[0].split("/") if s]
    if any(s.lower() == h.lower() for s in segments for h in hidden):
        return "404.8 hidden segment"
    last = segments[-1] if segments else ""
    if "." in last and any(last.lower().endswith(e.lower()) for e in denied):
        return "404.7 denied extension"
    return None


def routes(server) -> list[str]:
    """Every path of the server's OpenAPI document that takes a name-like parameter, filled with each of NAMES (other
    parameters, ids, with a UUID)."""
    status, document = server.api("GET", "/openapi.json")
    assert status == 200, document
    filled = []
    for path, operations in document["paths"].items():
        params = {p["name"]: p.get("schema", {}) for op in operations.values() if isinstance(op, dict)
                  for p in op.get("parameters", []) if p.get("in") == "path"}
        names = [n for n, schema in params.items() if schema.get("format") != "uuid"]
        if not names:
            continue
        for value in NAMES:
            url = path
            for name, schema in params.items():
                url = url.replace("{%s}" % name, str(uuid.uuid4()) if schema.get("format") == "uuid" else value)
            filled.append(url if url.startswith("/api") else "/api" + url)
    return filled


def test_no_prefect_route_is_refused_by_the_sites_request_filtering(sqlite_server):
    text, _allowed = webconfig.render(REPO / "roles" / "iis_proxy", REPO / "roles" / "iis_proxy" / "templates" / "web.config.j2")
    urls = routes(sqlite_server)
    assert len(urls) > 100 and any("/work_pools/" in u for u in urls), urls[:10]
    # Negative control: IIS's defaults refuse many of them (a work pool "bin", a flow "etl.config", ...).
    default_refused = [u for u in urls if refused(u, IIS_HIDDEN, IIS_DENIED)]
    assert any(u.endswith("/work_pools/bin") for u in default_refused), default_refused[:10]
    assert any(u.endswith("/flows/name/etl.config") for u in default_refused), default_refused[:10]
    hidden, denied = effective_filtering(text)
    assert (hidden, denied) == (["web.config"], []), (hidden, denied)
    assert [u for u in urls if refused(u, hidden, denied)] == []
    # The one file on disk stays hidden.
    assert refused("/web.config", hidden, denied) == "404.8 hidden segment"

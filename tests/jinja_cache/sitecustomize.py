"""Speed-ups of the ansible-playbook processes of a test run (tests/conftest.py puts this directory on PYTHONPATH and
names the cache in ENCLAVE_JINJA_CODE_CACHE): a cache of compiled Jinja templates, Jinja plugins and the local
connection's settings loaded once, and data tags shared by deep copies.

ansible-core 2.19 compiles every template and conditional it evaluates, again in every forked worker (one per task),
which is most of what a task costs on the simulated host. Jinja compiles the same source with the same settings to
the same code, so the code is kept on disk (marshal, as Jinja's own BytecodeCache does), keyed by everything that
shapes it: the source, the environment's class and lexer settings, Ansible's backslash escaping, the Jinja and
ansible-core versions.

Every forked worker also loads the filter and test plugins it uses again: ansible-core's builtin ones all at the first
lookup, a collection's by importing and scanning every filter file of the collection at every lookup. Loaded once in
the parent, before the first play, they are inherited by every worker: the builtin ones, and those of the collections
named in ENCLAVE_JINJA_PREWARM_COLLECTIONS (default enclave.prefect), whose lookups by full name are then remembered.

And ansible-playbook imports every connection plugin at start (PlaybookExecutor.run preloads them to cache their
settings), psrp's and winrm's with pypsrp, pywinrm, requests and the Kerberos libraries: a third of a second of each
run. The test runs connect locally: only the local connection is preloaded (with the lookups the roles use), so that
its settings are read once in the parent, not in every task's worker.

ansible-core keeps every role file it parsed and hands out a deep copy at each use (a role included by eight plays is
copied eight times); most of that copying is of the data tags on every value (where it was read from, whether it is
trusted as a template). Tags are frozen dataclasses, so the copies share them, as they share strings.

Only ansible-playbook processes are touched; with ENCLAVE_JINJA_CODE_CACHE unset or empty nothing is patched.
tests/roles/test_jinja_cache.py runs the same plays with and without all of them and compares the results."""
import os
import sys

_CACHE = os.environ.get("ENCLAVE_JINJA_CODE_CACHE", "")


def _install(cache: str) -> None:
    import hashlib
    import marshal

    import ansible
    import jinja2
    from jinja2 import nodes
    from jinja2.environment import TemplateExpression
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.parser import Parser

    from ansible._internal._templating import _jinja_bits

    os.makedirs(cache, exist_ok=True)
    versions = (jinja2.__version__, ansible.__version__)

    def key_of(env, kind, source, *more):
        ctx = _jinja_bits._TemplateCompileContext.current(optional=True)
        settings = tuple(getattr(env, name) for name in _jinja_bits._TEMPLATE_OVERRIDE_FIELD_NAMES)
        text = repr((versions, kind, type(env).__module__, type(env).__qualname__, settings, env.optimized,
                     sorted(env.extensions), bool(ctx and ctx.escape_backslashes), str(source), more))
        return os.path.join(cache, hashlib.sha256(text.encode()).hexdigest())

    def load(path):
        try:
            with open(path, "rb") as handle:
                return marshal.loads(handle.read())
        except (OSError, EOFError, ValueError, TypeError):
            return None

    def store(path, code):
        temporary = "%s.%d" % (path, os.getpid())
        with open(temporary, "wb") as handle:
            handle.write(marshal.dumps(code))
        os.replace(temporary, path)

    original_compile = jinja2.Environment.compile

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        if raw or not isinstance(source, str) or getattr(self, "_debuggable_template_source", False):
            return original_compile(self, source, name, filename, raw, defer_init)
        path = key_of(self, "template", source, name, filename, defer_init)
        code = load(path)
        if code is None:
            code = original_compile(self, source, name, filename, raw, defer_init)
            store(path, code)
        return code

    def compile_expression(self, source, undefined_to_none=True):
        # jinja2.Environment.compile_expression, with the compiled code cached.
        if getattr(self, "_debuggable_template_source", False):
            return original_compile_expression(self, source, undefined_to_none)
        path = key_of(self, "expression", source)
        code = load(path)
        if code is None:
            parser = Parser(self, source, state="variable")
            try:
                expr = parser.parse_expression()
                if not parser.stream.eos:
                    raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
                expr.set_environment(self)
            except TemplateSyntaxError:
                self.handle_exception(source=source)
            code = original_compile(self, nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)],
                                                         lineno=1))
            store(path, code)
        template = self.template_class.from_code(self, code, self.make_globals(None), None)
        return TemplateExpression(template, undefined_to_none)

    original_compile_expression = jinja2.Environment.compile_expression
    jinja2.Environment.compile = compile
    jinja2.Environment.compile_expression = compile_expression


def _install_plugin_prewarm(collections: list[str]) -> None:
    import importlib
    import pkgutil

    from ansible.executor.task_queue_manager import TaskQueueManager
    from ansible.plugins.loader import Jinja2Loader, PluginLoader, filter_loader, test_loader

    remembered = {}
    original_get_with_context = Jinja2Loader.get_with_context

    def get_with_context(self, name, *args, **kwargs):
        # Asked without options, two answers cannot change during a run: a full name of a prewarmed collection, and a
        # short name that is no Ansible plugin (ansible.builtin.<name> does not exist: Jinja's own filters and tests,
        # which the templating engine asks the loader for first, at the cost of a scan of every builtin plugin file).
        plain = "." not in name
        full = name.count(".") == 2 and name.rsplit(".", 1)[0] in collections
        key = (self.type, name) if not args and not kwargs and (plain or full) else None
        if key and key in remembered:
            return remembered[key]
        result = original_get_with_context(self, name, *args, **kwargs)
        if key and (result.object is None) == plain:
            remembered[key] = result
        return result

    Jinja2Loader.get_with_context = get_with_context
    original_run = TaskQueueManager.run
    done = []

    def run(self, play):
        if not done:
            done.append(True)
            from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS

            for loader, jinja_names in ((filter_loader, DEFAULT_FILTERS), (test_loader, DEFAULT_TESTS)):
                loader._ensure_non_collection_wrappers()
                for name in jinja_names:
                    if name.isidentifier():  # not the operator aliases of tests ("==", "<"), which are no plugin names
                        get_with_context(loader, name)
                for collection in collections:
                    try:
                        package = importlib.import_module("ansible_collections.%s.plugins.%s" % (collection, loader.type))
                    except ImportError:
                        continue
                    for _finder, module, is_package in pkgutil.iter_modules(package.__path__):
                        if is_package:
                            continue
                        # The file's FilterModule/TestModule, as Jinja2Loader.get_with_context loads it.
                        holder = PluginLoader.get_with_context(loader, "%s.%s" % (collection, module)).object
                        for plugin in getattr(holder, loader.method_map_name)():
                            get_with_context(loader, "%s.%s" % (collection, plugin))
        return original_run(self, play)

    TaskQueueManager.run = run


def _install_lazy_connections() -> None:
    from ansible.plugins.loader import connection_loader, lookup_loader

    original_all = connection_loader.all

    def all_plugins(*args, **kwargs):
        # PlaybookExecutor.run's preload is the only caller that asks for classes only. Its other effect, the
        # plugins' option definitions read once in the parent, is kept for the plugins the test runs use: the local
        # connection (every task's worker reads its documentation otherwise) and the file and template lookups.
        if kwargs.get("class_only") and not args:
            connection_loader.get("local", class_only=True)
            for lookup in ("ansible.builtin.file", "ansible.builtin.template"):
                lookup_loader.get(lookup, class_only=True)
            return iter(())
        return original_all(*args, **kwargs)

    connection_loader.all = all_plugins


def _install_shared_tags() -> None:
    from ansible.module_utils._internal._datatag import AnsibleDatatagBase

    # Tags (where a value was read from, trust) are frozen dataclasses: a deep copy can share them, as it shares a
    # str. The role files ansible-core caches are deep-copied at every use, their tags most of that work.
    AnsibleDatatagBase.__deepcopy__ = lambda self, memo: self


if _CACHE and os.path.basename(sys.argv[0] if sys.argv else "").startswith("ansible-playbook"):
    _install(_CACHE)
    _install_plugin_prewarm(os.environ.get("ENCLAVE_JINJA_PREWARM_COLLECTIONS", "enclave.prefect").split())
    _install_lazy_connections()
    _install_shared_tags()


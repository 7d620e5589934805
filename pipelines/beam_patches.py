"""Scoped adjustments to Beam and TFX that make local runs cheaper without changing what they compute.

Each is a context manager that installs a replacement for the duration of one local run and restores
the original afterwards, so nothing leaks into other code in the same process (tests, notebooks).
Both were found by profiling a cold `dxpipe run` (see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
import weakref


@contextlib.contextmanager
def no_tfx_sdist_for_direct_runner(runner: str):
    """Stops TFX from packaging itself for remote Beam workers when there are none.

    Every TFX Beam executor builds a TFX sdist to pass as `--extra_package` unless a dependency flag is
    set (tfx/utils/dependency_utils.py): ~1.5 s per Beam component, three per run. DirectRunner workers are
    this process (or forks of it) and never install packages, so the sdist is built for nobody. Any other
    runner keeps TFX's behaviour.

    Args:
        runner: The Beam runner the run's components use.
    """
    if runner != "DirectRunner":
        yield
        return
    from tfx.utils import dependency_utils

    original = dependency_utils.make_beam_dependency_flags
    dependency_utils.make_beam_dependency_flags = list
    try:
        yield
    finally:
        dependency_utils.make_beam_dependency_flags = original


class _ArgsCache:
    """`get_function_args_defaults` remembered per function object.

    Beam asks for the parameters of every method of every DoFn each time it validates, translates or
    executes a ParDo (apache_beam.transforms.userstate.get_dofn_specs walks `dir(dofn)` and inspects each
    method, ~7 times per DoFn per pipeline). TFDV and TFMA build pipelines of hundreds of ParDos, so a cold
    run spent 4.4 s of 26 s in `inspect.signature` re-deriving answers fixed when a function is defined.

    Keys are weak, so functions of discarded pipelines (lambdas in `beam.Map`) are not kept alive. Bound
    methods are keyed by their underlying function in a separate table: their signature drops the bound
    first parameter, which does not depend on which instance they are bound to. Anything else (partials,
    callable objects, builtins) is passed straight through.
    """

    def __init__(self, compute):
        self._compute = compute
        self._functions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._methods: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, f):
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
            table, key = self._methods, f.__func__
        elif isinstance(f, types.FunctionType):
            table, key = self._functions, f
        else:
            return self._compute(f)
        found = table.get(key)
        if found is None:
            found = self._compute(f)
            table[key] = found
        args, defaults = found
        # Callers get their own lists, as they would from an uncached call.
        return list(args), list(defaults)


class _OptionViews:
    """`PipelineOptions.view_as` without re-building an argparse parser for every view.

    Each `view_as(cls)` constructs `cls(flags)`: a fresh parser with every option of the class's
    hierarchy, then a parse of the flags. Beam calls it while applying every transform (type checks,
    result-type inference, compatibility-version checks): 3,565 calls, 2.0 s of a cold run. The parse
    result depends only on the class and the flags (and `sys.argv` when flags are None), so it is kept
    per (class, flags) and each new view is assembled from it exactly as `view_as` does: same class,
    same flags list, options it has not seen yet added to the shared `_all_options`. Values are copied
    on the way in, so two options objects never share a mutable value (Beam appends to `experiments`).
    Classes with their own `__init__` are not cached.
    """

    def __init__(self, original, base):
        self._original = original
        self._base = base
        self._parsed: dict = {}

    def __call__(self, options, cls):
        flags = options._flags
        if cls.__init__ is not self._base.__init__:
            return self._original(options, cls)
        try:
            key = (cls, tuple(flags) if flags is not None else ("argv", *sys.argv))
            hash(key)
        except TypeError:
            return self._original(options, cls)
        found = self._parsed.get(key)
        if found is None:
            view = self._original(options, cls)
            # A snapshot, not the view's own namespace: `view_as` has just put that namespace's values
            # into `options._all_options`, where Beam may mutate them later.
            namespace = copy.deepcopy(view._visible_options)
            self._parsed[key] = (namespace, sorted(n for n in dir(namespace) if n[0] != "_"))
            return view
        namespace, names = found
        view = cls.__new__(cls)
        view._flags = flags
        view._visible_options = namespace  # only ever read, as in Beam
        shared = options._all_options
        for name in names:
            if name not in shared:
                shared[name] = copy.deepcopy(getattr(namespace, name))
        view._all_options = shared
        return view


@contextlib.contextmanager
def cached_option_views():
    """Assembles `PipelineOptions` views from cached parses for the duration of a run (`_OptionViews`)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    original = PipelineOptions.view_as
    views = _OptionViews(original, PipelineOptions)

    def view_as(self, cls):
        return views(self, cls)

    PipelineOptions.view_as = view_as
    try:
        yield
    finally:
        PipelineOptions.view_as = original


@contextlib.contextmanager
def memoized_dofn_introspection():
    """Remembers Beam's per-function argument inspection for the duration of a run (see `_ArgsCache`)."""
    from apache_beam.transforms import core

    original = core.get_function_args_defaults
    core.get_function_args_defaults = _ArgsCache(original)
    try:
        yield
    finally:
        core.get_function_args_defaults = original

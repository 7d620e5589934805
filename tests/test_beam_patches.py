"""The scoped Beam adjustments change timing only: same answers, isolated state, originals restored."""

from __future__ import annotations

import functools
import gc

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TypeOptions,
)
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate

from pipelines import beam_patches

FLAGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def plain(a, b=2, *rest, c=3, **kw):
    return a


BAG = beam.DoFn.StateParam(userstate.BagStateSpec("s", beam.coders.VarIntCoder()))


class Doer(beam.DoFn):
    def process(
        self,
        element,
        side=None,
        state=BAG,
    ):
        yield element


@pytest.mark.parametrize(
    "target",
    [plain, Doer().process, lambda x, y=1: x, functools.partial(plain, 1), len, Doer],
    ids=["function", "bound-method", "lambda", "partial", "builtin", "class"],
)
def test_cached_arguments_equal_beams_own(target):
    expected = core.get_function_args_defaults(target)
    with beam_patches.memoized_dofn_introspection():
        first = core.get_function_args_defaults(target)
        again = core.get_function_args_defaults(target)
    assert first == again == expected


def test_callers_get_their_own_lists():
    cache = beam_patches._ArgsCache(core.get_function_args_defaults)
    args, defaults = cache(plain)
    args.append("mutated")
    defaults.clear()
    assert cache(plain) == (["a", "b"], [2])


def test_bound_methods_of_different_instances_share_one_entry_and_drop_self():
    calls = []

    def compute(f):
        calls.append(f)
        return core.get_function_args_defaults(f)

    cache = beam_patches._ArgsCache(compute)
    assert cache(Doer().process)[0] == ["element", "side", "state"]
    assert cache(Doer().process)[0] == ["element", "side", "state"]
    assert len(calls) == 1
    # The unbound function is a different question (it has `self`), so it is not answered from there.
    assert cache(Doer.process)[0][0] == "self"


def test_entries_do_not_keep_functions_alive():
    cache = beam_patches._ArgsCache(core.get_function_args_defaults)

    def make():
        return lambda x: x

    fn = make()
    cache(fn)
    assert len(cache._functions) == 1
    del fn
    gc.collect()
    assert len(cache._functions) == 0


def test_stateful_dofns_are_still_recognised():
    with beam_patches.memoized_dofn_introspection():
        specs = userstate.get_dofn_specs(Doer())
        assert userstate.is_stateful_dofn(Doer())
    assert {s.name for s in specs[0]} == {"s"}


def test_patches_are_restored_after_the_run_even_on_error():
    originals = (core.get_function_args_defaults, PipelineOptions.view_as)
    with (
        pytest.raises(RuntimeError),
        beam_patches.memoized_dofn_introspection(),
        beam_patches.cached_option_views(),
    ):
        assert (core.get_function_args_defaults, PipelineOptions.view_as) != originals
        raise RuntimeError("boom")
    assert (core.get_function_args_defaults, PipelineOptions.view_as) == originals


@pytest.mark.parametrize("cls", [StandardOptions, DirectOptions, DebugOptions, TypeOptions])
def test_cached_views_read_like_beams_views(cls):
    expected = PipelineOptions(FLAGS).view_as(cls)
    with beam_patches.cached_option_views():
        options = PipelineOptions(FLAGS)
        first, second = options.view_as(cls), PipelineOptions(FLAGS).view_as(cls)
        for view in (first, second):
            assert type(view) is cls
            assert view.get_all_options() == expected.get_all_options()


def test_cached_views_keep_options_objects_apart():
    with beam_patches.cached_option_views():
        one = PipelineOptions([*FLAGS, "--experiments=a"])
        two = PipelineOptions([*FLAGS, "--experiments=a"])
        one.view_as(DebugOptions).add_experiment("only_one")
        two_debug = two.view_as(DebugOptions)
        three = PipelineOptions([*FLAGS, "--experiments=a"]).view_as(DebugOptions)
    assert one.view_as(DebugOptions).experiments == ["a", "only_one"]
    assert two_debug.experiments == ["a"] and three.experiments == ["a"]


def test_views_of_one_options_object_share_its_values():
    with beam_patches.cached_option_views():
        options = PipelineOptions(FLAGS)
        options.view_as(StandardOptions)  # fills the cache
        options.view_as(StandardOptions).streaming = True
        assert options.view_as(StandardOptions).streaming is True
        assert PipelineOptions(FLAGS).view_as(StandardOptions).streaming is False


def test_a_real_pipeline_gives_the_same_result_under_the_patches():
    def run():
        with beam.Pipeline(options=PipelineOptions(FLAGS)) as p:
            counts = (
                p
                | beam.Create(["b", "a", "b", "c", "b"])
                | beam.Map(lambda w, n=1: (w, n))
                | beam.CombinePerKey(sum)
            )
            assert_that(counts, equal_to([("a", 1), ("b", 3), ("c", 1)]))

    run()
    with beam_patches.memoized_dofn_introspection(), beam_patches.cached_option_views():
        run()
        run()

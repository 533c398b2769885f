"""Unit tests of the checkpoint module's helpers (the fallback itself is tested in test_loop)."""

import sys
import types

from fnnjax.train import checkpoint


def _report(error, obj=None):
    return types.SimpleNamespace(exc_value=error, object=obj, exc_type=type(error))


def test_only_the_late_reports_of_an_abandoned_orbax_read_are_dropped():
    passed = []
    drop = checkpoint._drop_closed_event_loop_reports
    drop(_report(RuntimeError("Event loop is closed")), passed.append)
    other = _report(RuntimeError("something else"))
    drop(other, passed.append)
    user_coroutine = _report(GeneratorExit(), obj=(lambda: (yield))())
    drop(user_coroutine, passed.append)
    assert passed == [other, user_coroutine]


def test_the_filter_is_armed_before_any_read_and_only_once(monkeypatch):
    seen = []
    monkeypatch.setattr("sys.unraisablehook", seen.append)
    with checkpoint._quiet_orbax_errors():
        hook = sys.unraisablehook
        assert getattr(hook, "_fnnjax", False)
    with checkpoint._quiet_orbax_errors():
        assert sys.unraisablehook is hook  # not wrapped twice
    hook(_report(RuntimeError("Event loop is closed")))
    hook(_report(ValueError("x")))
    assert [type(r.exc_value) for r in seen] == [ValueError]

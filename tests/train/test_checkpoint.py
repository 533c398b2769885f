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


def _task_record(message):
    import logging

    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)


def test_only_asyncio_reports_of_abandoned_orbax_read_tasks_are_dropped():
    keep = checkpoint._AbandonedOrbaxReads().filter
    orbax_file = "/venv/site-packages/orbax/checkpoint/_src/serialization/serialization.py"
    assert not keep(_task_record("Task exception was never retrieved\nfuture: <Task finished "
                                 f"name='Task-9' coro=<async_deserialize() done, defined at "
                                 f"{orbax_file}:394> exception=ValueError('NOT_FOUND')>"))  # fmt: skip
    assert not keep(_task_record("Task was destroyed but it is pending!\ntask: <Task pending "
                                 f"name='Task-3' coro=<async_deserialize() running, defined at "
                                 f"{orbax_file}:394>>"))  # fmt: skip
    # A write of orbax, a coroutine of the user's, or any other report is passed on.
    assert keep(_task_record("Task exception was never retrieved\nfuture: <Task finished name='T' "
                             f"coro=<async_serialize() done, defined at {orbax_file}:100>>"))  # fmt: skip
    assert keep(_task_record("Task exception was never retrieved\nfuture: <Task finished name='T' "
                             "coro=<deserialize() done, defined at /home/me/mine.py:3>>"))  # fmt: skip
    assert keep(_task_record("Exception in callback Handle._run()"))


def _collected_failed_task(filename, name):
    """Runs a task of coroutine ``name`` (its code in ``filename``) that fails, never awaits it,
    and lets it be collected: asyncio then logs "Task exception was never retrieved"."""
    import asyncio
    import gc

    code = compile(f"async def {name}():\n    raise ValueError('NOT_FOUND: no manifest')\n", filename, "exec")
    scope = {}
    exec(code, scope)
    loop = asyncio.new_event_loop()
    task = loop.create_task(scope[name]())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    del task
    gc.collect()


def test_asyncio_reports_of_orbax_read_tasks_collected_after_the_restore_are_silent(caplog):
    """A damaged checkpoint fails an array's read; orbax raises it and abandons the other arrays'
    read tasks, which asyncio reports when they are collected, at any later time (7 lines and a
    traceback each: 75-156 lines after the warning). Once a read was tried, those are dropped."""
    with checkpoint._quiet_orbax_errors():
        pass
    _collected_failed_task("/venv/site-packages/orbax/checkpoint/_src/serialization/x.py", "async_deserialize")
    assert [r for r in caplog.records if r.name == "asyncio"] == []
    _collected_failed_task("/home/me/mine.py", "async_deserialize")  # not orbax's: reported
    (report,) = [r for r in caplog.records if r.name == "asyncio"]
    assert report.getMessage().startswith("Task exception was never retrieved")

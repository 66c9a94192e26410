import pytest

from harness.core.errors import ConfigError
from harness.core.registry import Registry


def test_decorator_registers_and_duplicates_raise():
    reg = Registry("widget")

    @reg.register("a")
    def a():
        return 1

    assert reg["a"] is a
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_lists_valid_names():
    reg = Registry("widget")
    reg.add("beta", 1)
    reg.add("alpha", 2)
    with pytest.raises(ConfigError) as e:
        reg.lookup("gamma")
    assert str(e.value) == "unknown widget 'gamma'; valid widgets: alpha, beta"


def test_builtin_registries_are_filled():
    from harness.spec.methods import METHODS
    from harness.spec.metrics import METRICS
    from harness.spec.task import get_task

    assert get_task("cnn").name == "cnn"
    assert {"base", "full", "lora", "qlora", "qlora4", "qlora8"} <= set(METHODS)
    assert METRICS["rougeL"].higher_is_better and METRICS["rougeL"].aggregation == "mean"

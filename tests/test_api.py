"""The public API in arml/__init__.py: every name resolves, lazily, to what it documents."""

import importlib
import pkgutil
import types

import arml


def test_every_public_name_resolves_even_after_every_submodule_is_imported():
    for info in pkgutil.walk_packages(arml.__path__, "arml."):
        if info.name != "arml.__main__":
            importlib.import_module(info.name)  # a submodule named like an API entry would shadow it
    for name in arml.__all__:
        value = getattr(arml, name)
        assert not isinstance(value, types.ModuleType), f"arml.{name} is a module, not the API's {name}"
    assert arml.predict is importlib.import_module("arml.evaluation").predict
    assert "Experiment" in dir(arml)

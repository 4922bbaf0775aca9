import dataclasses
import math

import pytest

from arml.options import RECIPES, Config, check_choice, option, parse_omega


def test_check_choice_names_the_option_and_the_choices():
    check_choice("recipe", "paper", RECIPES)
    with pytest.raises(ValueError, match=r"recipe must be one of \['paper', 'official'\], got 'papr'"):
        check_choice("recipe", "papr", RECIPES)


@pytest.mark.parametrize(
    ("text", "value"), [("2", 2.0), (3, 3.0), ("inf", math.inf), ("none", None), ("N/A", None), (None, None)]
)
def test_parse_omega(text, value):
    assert parse_omega(text) == value


@pytest.mark.parametrize("bad", ["abc", "0.5", "nan", [2]])
def test_parse_omega_rejects_what_eq4_cannot_use(bad):
    with pytest.raises(ValueError, match="omega must be a number >= 1"):
        parse_omega(bad)


@dataclasses.dataclass
class Demo(Config):
    root: str = option(help="where", cli=False)
    mode: str = option("a", "which mode", choices=("a", "b"), aliases=("--m",))
    sizes: tuple[int, ...] = option(factory=lambda: (1, 2), help="sizes")


def test_option_carries_help_choices_and_aliases():
    fields = {f.name: f for f in dataclasses.fields(Demo)}
    assert fields["mode"].metadata == {
        "help": "which mode",
        "choices": ("a", "b"),
        "cli": True,
        "aliases": ("--m",),
    }
    assert fields["root"].metadata["cli"] is False and Demo("x").sizes == (1, 2)


def test_config_round_trip_unknown_and_missing_fields():
    demo = Demo("x", "b")
    assert Demo.from_dict(demo.to_dict()) == demo
    with pytest.raises(
        ValueError, match=r"unknown Demo fields \['colour'\]; valid fields: \['mode', 'root', 'sizes'\]"
    ):
        Demo.from_dict({"root": "x", "colour": 1})
    with pytest.raises(ValueError, match=r"Demo fields \['root'\] are missing \(given: \['mode'\]\)"):
        Demo.from_dict({"mode": "a"})
    demo.mode = "c"
    with pytest.raises(ValueError, match=r"Demo.mode must be one of \['a', 'b'\], got 'c'"):
        demo.check_choices()

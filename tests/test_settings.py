"""Settings declared once: flags derived from dataclass fields, reaching only their owner."""

import argparse
from dataclasses import dataclass, field

import pytest

from tunesift.settings import FlagTable, key_fields, replace_settings, setting, settings_flags


@dataclass
class Inner:
    """Inner settings.

    Attributes:
        epochs: passes over the data.
        seed: set per run.
    """

    epochs: int = 3
    seed: int = 0
    cli_hidden = ("seed",)


@dataclass
class Outer:
    rate: float = setting(0.1, "a rate")
    name: str | None = setting(None, "a name")
    targets: tuple[str, ...] = setting(("a", "b"), "targets")
    on: bool = setting(False, "a switch")
    batch: int = setting(8, "speed only", key=False)
    hidden: dict = setting(default_factory=dict, cli=False)
    inner: Inner = setting(default_factory=Inner, prefix="in-", bench_only=True)

    def __post_init__(self):
        if self.rate < 0:
            raise ValueError(f"`rate` must be non-negative, got {self.rate}")


def test_flags_come_from_fields_and_docstrings():
    flags = {f.flag: f for f in settings_flags(Outer, "x", prefix="x-")}
    assert set(flags) == {"--x-rate", "--x-name", "--x-targets", "--x-on", "--x-batch", "--x-in-epochs"}
    assert flags["--x-in-epochs"].help == "passes over the data." and flags["--x-in-epochs"].path == ("inner", "epochs")
    assert flags["--x-targets"].kind == "tuple" and flags["--x-on"].kind == "bool" and flags["--x-name"].kind == "str"
    assert "--x-in-epochs" not in {f.flag for f in settings_flags(Outer, "x", prefix="x-", bench=False)}


def _parser():
    p = argparse.ArgumentParser()
    table = FlagTable()
    table.add(p.add_argument_group("x"), settings_flags(Outer, "x", prefix="x-"))
    table.add(p.add_argument_group("m1"), settings_flags(Inner, "m1"), shared=True)
    table.add(p.add_argument_group("m2"), settings_flags(Inner, "m2"), shared=True)
    return p, table


def test_values_reach_only_their_owner_and_unused_owners_are_refused():
    p, table = _parser()
    args = p.parse_args(["--x-rate", "0.5", "--x-targets", "q, v", "--x-on", "--x-in-epochs", "7", "--epochs", "2"])
    assert table.values(args, "x") == {"rate": 0.5, "targets": ("q", "v"), "on": True, "inner": {"epochs": 7}}
    assert table.values(args, "m1") == {"epochs": 2} == table.values(args, "m2")  # a shared flag reaches both
    table.check_unused(args, ["x", "m1"])
    with pytest.raises(ValueError, match="--x-rate applies to x only"):
        table.check_unused(args, ["m1"])
    s = replace_settings(Outer(), table.values(args, "x"))
    assert s.rate == 0.5 and s.inner.epochs == 7 and s.inner.seed == 0
    with pytest.raises(ValueError, match="`rate` must be non-negative"):
        replace_settings(Outer(), {"rate": -1.0})
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        replace_settings(Outer(), {"nope": 1})


def test_a_flag_declared_twice_outside_a_shared_family_is_an_error():
    p = argparse.ArgumentParser()
    table = FlagTable()
    table.add(p.add_argument_group("a"), settings_flags(Inner, "a"))
    with pytest.raises(ValueError, match="--epochs is declared twice"):
        table.add(p.add_argument_group("b"), settings_flags(Inner, "b"))


def test_key_fields_leave_out_speed_only_settings():
    keys = key_fields(Outer())
    assert "batch" not in keys and keys["inner"] == {"epochs": 3, "seed": 0} and keys["rate"] == 0.1


def test_every_rec_command_builds_its_flags_without_clashes():
    from tunesift.cli import build_parser

    parser = build_parser()
    for argv in (["dealrec", "--help"], ["bench", "rec", "--help"], ["gotd", "--help"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 0


def test_a_setting_added_later_is_left_out_of_records_while_at_its_default():
    from dataclasses import asdict

    from tunesift.rec.tiger.settings import TigerFitSettings, TigerSettings
    from tunesift.settings import key_fields, settings_record

    default = TigerSettings()
    record = settings_record(default)
    later = ("valid_users", "max_steps", "eval_every_steps", "schedule", "ema", "select_on")
    assert not set(later) & set(record["fit"])  # so bench folders made before they existed stay valid
    full = asdict(default)
    for name in later:
        del full["fit"][name]
    assert record == full
    assert "valid_users" not in key_fields(default)["fit"]
    changed = TigerSettings(fit=TigerFitSettings(valid_users="all"))
    assert settings_record(changed)["fit"]["valid_users"] == "all"
    assert key_fields(changed)["fit"]["valid_users"] == "all"
    budget = TigerSettings(fit=TigerFitSettings(max_steps=400, eval_every_steps=20))
    assert settings_record(budget)["fit"]["max_steps"] == 400 and key_fields(budget)["fit"]["eval_every_steps"] == 20


def test_none_reaches_a_field_that_may_be_none_and_only_such_a_field():
    p, table = _parser()
    args = p.parse_args(["--x-name", "None"])
    assert table.values(args, "x") == {"name": None}  # given, not "not given": it replaces a default
    assert [(f, str(v)) for f, v in table.given(args)] == [("--x-name", "none")]  # commands print it as typed
    assert replace_settings(Outer(name="b"), table.values(args, "x")).name is None
    assert table.values(p.parse_args(["--x-name", "nonesuch"]), "x") == {"name": "nonesuch"}
    with pytest.raises(SystemExit):  # an int field that may not be None keeps refusing it
        p.parse_args(["--x-in-epochs", "none"])

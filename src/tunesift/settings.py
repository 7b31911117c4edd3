"""Settings declared once: a dataclass per stage, its command-line flags derived from its fields.

A stage (the SASRec surrogate, the influence score, a backbone's effort, training...) declares its
settings as a dataclass validated in ``__post_init__``. The help text of a field is
``field(metadata={"help": ...})`` or, when absent, its line in the class docstring's ``Attributes:``
section; ``metadata={"flag": "--lambda"}`` renames a flag, ``{"cli": False}`` hides a field,
``{"key": False}`` marks a field that changes speed or memory but not results (batch sizes), so cache
keys leave it out; ``{"key": "unless-default"}`` a field added after caches and bench folders existed:
at its default it does what came before, so it is left out of keys and records while at its default and
those folders stay valid (:func:`settings_record`). Nested settings dataclasses become flags too, without a prefix of their own.

:class:`FlagTable` adds the flags of many owners (methods, stages, backbones) to one parser. An owner's
flags reach only that owner: values are stored under ``owner:field`` destinations, a flag shared by
several owners (``--strata`` of dealrec and ccs) is added once and read by each, and a flag given for an
owner that is not in use is refused with the owners it belongs to.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Iterable, Iterator, Mapping

_DEST_SEP = ":"


def setting(default: Any = MISSING, help: str = "", *, flag: str | None = None, cli: bool = True,
            key: bool | str = True, choices: Iterable[Any] | None = None, default_factory: Any = MISSING,
            prefix: str = "", bench_only: bool = False) -> Any:
    """A dataclass field with its help text and flag options (see the module docstring).

    ``prefix`` (nested settings only) is put before the flags of the nested fields (``ft-``: ``--ft-epochs``).
    ``bench_only``: the field (e.g. fine-tuning settings) is a flag of ``bench`` commands, not of selection.
    """
    metadata = {"help": help, "flag": flag, "cli": cli, "key": key, "prefix": prefix, "bench_only": bench_only,
                "choices": tuple(choices) if choices is not None else None}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _docstring_help(cls: type) -> dict[str, str]:
    """``name: text`` lines (with their continuation lines) of the class docstring's Attributes section."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    section = doc.split("Attributes:", 1)
    if len(section) < 2:
        return out
    current = None
    for line in section[1].splitlines():
        m = re.match(r"^\s{4,8}([a-z_][a-z0-9_]*)(?:, ([a-z_][a-z0-9_, ]*))?: (.*)$", line)
        if m:
            names = [m.group(1)] + [n.strip() for n in (m.group(2) or "").split(",") if n.strip()]
            current = names
            for n in names:
                out[n] = m.group(3).strip()
        elif current and line.strip() and line.startswith(" " * 9):
            for n in current:
                out[n] += " " + line.strip()
        elif not line.strip():
            current = None
    return out


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001  (unresolvable forward references: fall back to the raw strings)
        return {f.name: f.type for f in fields(cls)}


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the non-None type of a hint, whether None is allowed)."""
    if isinstance(hint, str):
        parts = [p.strip() for p in hint.split("|")]
        optional = "None" in parts
        parts = [p for p in parts if p != "None"]
        return (parts[0] if parts else "str"), optional
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        return (non_none[0] if non_none else str), len(non_none) < len(args)
    return hint, False


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag of one settings field (of one owner)."""

    owner: str
    path: tuple[str, ...]  # field names from the owner's settings class down to the field
    flag: str
    help: str
    kind: str  # "int", "float", "str", "bool", "tuple"
    default: Any
    choices: tuple[Any, ...] | None
    optional: bool = False  # the field may be None: the flag then also takes ``none``

    @property
    def dest(self) -> str:
        return f"{self.owner}{_DEST_SEP}{'.'.join(self.path)}"


def settings_flags(cls: type, owner: str, prefix: str = "", bench: bool = True,
                   _path: tuple[str, ...] = ()) -> list[Flag]:
    """The flags of a settings dataclass: ``--{prefix}{field-name}`` unless a field names its own.

    ``bench=False`` leaves out the fields marked ``bench_only``; a class attribute ``cli_hidden``
    (field names) hides fields of a settings class that does not use :func:`setting` (e.g. ``seed``).
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a settings dataclass")
    hints = _hints(cls)
    doc = _docstring_help(cls)
    hidden = set(getattr(cls, "cli_hidden", ()))
    out: list[Flag] = []
    for f in fields(cls):
        meta = f.metadata or {}
        if not meta.get("cli", True) or f.name.startswith("_") or f.name in hidden:
            continue
        if meta.get("bench_only") and not bench:
            continue
        hint, optional = _base_type(hints.get(f.name, f.type))
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        if is_dataclass(hint) or is_dataclass(default):
            sub = hint if is_dataclass(hint) else type(default)
            out += settings_flags(sub, owner, prefix + meta.get("prefix", ""), bench, _path + (f.name,))
            continue
        name = str(hint) if not isinstance(hint, type) else hint.__name__
        if name.startswith(("tuple", "typing.Tuple", "Tuple", "list")):
            kind = "tuple"
        elif name in ("int", "float", "str", "bool"):
            kind = name
        else:
            continue  # dicts and other structures are not flags
        flag = meta.get("flag") or f"--{prefix}{f.name.replace('_', '-')}"
        out.append(Flag(owner=owner, path=_path + (f.name,), flag=flag, help=meta.get("help") or doc.get(f.name, ""),
                        kind=kind, default=default, choices=meta.get("choices"), optional=optional))
    return out


def _parse_tuple(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


class _NoneGiven:
    """``none`` given to a flag whose field may be None (None itself means "not given"); prints as typed."""

    def __repr__(self) -> str:
        return "none"

    __str__ = __repr__


_NONE = _NoneGiven()


def _converter(kind: str, optional: bool = False):
    convert = {"int": int, "float": float, "str": str, "tuple": _parse_tuple}[kind]
    if not optional:
        return convert

    def none_or(text: str) -> Any:
        return _NONE if text.strip().lower() == "none" else convert(text)

    none_or.__name__ = convert.__name__  # argparse names the type in its error message
    return none_or


class FlagTable:
    """The flags of several owners in one parser (see the module docstring).

    ``add(group, flags)`` adds an owner's flags to an argument group; ``values(args, owner)`` returns
    the values given for that owner as a nested dict (``{"train": {"epochs": 3}}``), ready for
    :func:`replace_settings`; ``check_unused(args, active)`` refuses flags of owners not in use.
    """

    def __init__(self) -> None:
        self._by_flag: dict[str, list[Flag]] = {}
        self._shared: dict[str, bool] = {}

    def add(self, group: argparse._ArgumentGroup, flags: Iterable[Flag], shared: bool = False) -> None:
        """Add flags; ``shared``: owners of this family (methods) may declare the same field's flag,
        which is then added once and read by each of them. Any other repeated flag is an error."""
        for fl in flags:
            known = self._by_flag.get(fl.flag)
            if known:
                first = known[0]
                if not (shared and self._shared.get(fl.flag)) or first.kind != fl.kind or first.path[-1] != fl.path[-1]:
                    raise ValueError(f"flag {fl.flag} is declared twice with different meanings: "
                                     f"{first.owner}.{'.'.join(first.path)} and {fl.owner}.{'.'.join(fl.path)}")
                known.append(fl)
                continue
            self._by_flag[fl.flag] = [fl]
            self._shared[fl.flag] = shared
            dest = f"flag{_DEST_SEP}{fl.flag}"
            shown = "" if fl.default is None else (
                ",".join(map(str, fl.default)) if isinstance(fl.default, tuple) else str(fl.default))
            help_ = fl.help + (f" (one of: {', '.join(map(str, fl.choices))})" if fl.choices else "")
            help_ = help_ if "(default" in help_ else f"{help_} (default: {shown or 'none'})".lstrip()
            if fl.kind == "bool":
                group.add_argument(fl.flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
            else:
                # choices are shown, not enforced here: the settings class says what is wrong, naming the field
                group.add_argument(fl.flag, dest=dest, type=_converter(fl.kind, fl.optional), default=None, help=help_,
                                   metavar=fl.path[-1].upper())

    def owners(self, flag: str) -> list[str]:
        return [f.owner for f in self._by_flag.get(flag, [])]

    def given(self, args: argparse.Namespace) -> Iterator[tuple[str, Any]]:
        for flag in self._by_flag:
            value = getattr(args, f"flag{_DEST_SEP}{flag}", None)
            if value is not None:
                yield flag, value

    def values(self, args: argparse.Namespace, owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for flag, value in self.given(args):
            for fl in self._by_flag[flag]:
                if fl.owner != owner:
                    continue
                node = out
                for part in fl.path[:-1]:
                    node = node.setdefault(part, {})
                node[fl.path[-1]] = None if value is _NONE else value
        return out

    def check_unused(self, args: argparse.Namespace, active: Iterable[str]) -> None:
        """Refuse a flag none of whose owners is in use (e.g. a TIGER flag with ``--backbone bigrec``)."""
        active = set(active)
        for flag, _ in self.given(args):
            owners = self.owners(flag)
            if not active.intersection(owners):
                raise ValueError(f"{flag} applies to {', '.join(owners)} only, and this command does not run "
                                 f"{'it' if len(owners) == 1 else 'any of them'}")


def replace_settings(settings: Any, values: Mapping[str, Any]) -> Any:
    """A copy of a settings dataclass with (nested) fields replaced: ``{"train": {"epochs": 3}}``.

    Unknown names raise ``ValueError`` listing the known ones; nested settings are validated again.
    """
    if not values:
        return settings
    known = {f.name: f for f in fields(settings)}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"unknown setting {name!r} of {type(settings).__name__}; expected one of "
                             f"{', '.join(sorted(known))}")
        current = getattr(settings, name)
        if is_dataclass(current) and isinstance(value, Mapping):
            changes[name] = replace_settings(current, value)
        else:
            changes[name] = value
    return dataclasses.replace(settings, **changes)


UNLESS_DEFAULT = "unless-default"


def _at_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not MISSING:
        return value == f.default
    return f.default_factory is not MISSING and value == f.default_factory()


def key_fields(settings: Any) -> dict[str, Any]:
    """The fields that change results (``metadata["key"]`` not False), nested ones included."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        key = (f.metadata or {}).get("key", True)
        value = getattr(settings, f.name)
        if not key or (key == UNLESS_DEFAULT and _at_default(f, value)):
            continue
        out[f.name] = key_fields(value) if is_dataclass(value) else value
    return out


def settings_record(settings: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` without the ``"unless-default"`` fields that are at their default: what a
    manifest, a cache key or ``bench.json`` records, unchanged by settings added later at their default."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if (f.metadata or {}).get("key", True) == UNLESS_DEFAULT and _at_default(f, value):
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return settings_record(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def field_names(cls: type) -> set[str]:
    """The top-level field names of a settings dataclass."""
    return {f.name for f in fields(cls)}

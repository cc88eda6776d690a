"""TensorRT stand-ins that cannot invent an API: every name is checked against tensorrt-stubs (10.x).

Tests of the TensorRT code run without TensorRT, so they drive it with stand-ins. A
hand-written stand-in mirrors the implementation and happily accepts a misspelled or removed
method; these cannot. :class:`StubIndex` parses the installed ``tensorrt-stubs`` (the
TensorRT 10.x Python API, repaired by ``rfnet.export.trt.trt_typing_stubs.fix_def_line``), and
:func:`fake_tensorrt` builds a module whose classes, enum members, methods, properties and
call signatures are exactly the stubs' -- minus the names a test removes to play TensorRT 8.6
or 11 (removing never invents). Behaviour comes from the test: ``make(cls, **members)``
creates an instance whose members must exist in that class; methods are wrapped so that
every call is bound against the stub signatures; reads and writes of undeclared names raise
``AttributeError`` naming the class. Every name touched is recorded in ``fake.used``.
"""
from __future__ import annotations

import ast
import functools
import inspect
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from rfnet.export.trt.trt_typing_stubs import fix_def_line, stubs_source

_EMPTY = inspect.Parameter.empty
_VALUE = re.compile(r"#\s*value\s*=\s*<([\w.]+)\.(\w+):\s*(-?\d+)>")


@dataclass
class ClassStub:
    name: str
    bases: list[str]
    methods: dict[str, list[inspect.Signature]] = field(default_factory=dict)
    properties: dict[str, bool] = field(default_factory=dict)  # name -> has a setter
    attributes: set[str] = field(default_factory=set)  # annotated instance attributes (settable)
    members: dict[str, int] = field(default_factory=dict)  # enum-like ClassVar members -> value
    nested: dict[str, "ClassStub"] = field(default_factory=dict)


def _signature(fn: ast.FunctionDef, *, drop_self: bool) -> inspect.Signature:
    a = fn.args
    params: list[inspect.Parameter] = []
    positional = a.posonlyargs + a.args
    defaults = [_EMPTY] * (len(positional) - len(a.defaults)) + [None] * len(a.defaults)
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        if i == 0 and drop_self:
            continue
        kind = inspect.Parameter.POSITIONAL_ONLY if arg in a.posonlyargs else inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(arg.arg, kind, default=default))
    if a.vararg:
        params.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, kw_default in zip(a.kwonlyargs, a.kw_defaults):
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.KEYWORD_ONLY,
                                        default=_EMPTY if kw_default is None else None))
    if a.kwarg:
        params.append(inspect.Parameter(a.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _decorators(fn: ast.FunctionDef) -> set[str]:
    return {ast.unparse(d) for d in fn.decorator_list}


def _parse_class(node: ast.ClassDef, lines: list[str]) -> ClassStub:
    cls = ClassStub(node.name, [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases])
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            decs = _decorators(item)
            if "property" in decs:
                cls.properties.setdefault(item.name, False)
            elif any(d.endswith(".setter") for d in decs):
                cls.properties[item.name] = True
            else:
                cls.methods.setdefault(item.name, []).append(_signature(item, drop_self="staticmethod" not in decs))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            name = item.target.id
            if "ClassVar" in ast.unparse(item.annotation):
                m = _VALUE.search(lines[item.lineno - 1])
                if m and not name.startswith("__"):
                    cls.members[name] = int(m.group(3))
            else:
                cls.attributes.add(name)
        elif isinstance(item, ast.ClassDef):
            cls.nested[item.name] = _parse_class(item, lines)
    return cls


class StubIndex:
    """Classes, functions and module attributes of the installed tensorrt-stubs."""

    def __init__(self, root: Path | None = None) -> None:
        root = root or stubs_source()
        self.classes: dict[str, ClassStub] = {}
        self.functions: dict[str, list[inspect.Signature]] = {}
        self.module_attrs: dict[str, tuple[str, str, int] | None] = {}  # name -> (enum, member, value)
        for pyi in (root / "tensorrt_bindings" / "tensorrt.pyi", root / "tensorrt_bindings" / "__init__.pyi",
                    root / "tensorrt" / "__init__.pyi"):
            text = "".join(fix_def_line(line) for line in pyi.read_text(encoding="utf-8").splitlines(keepends=True))
            lines = text.splitlines()
            for node in ast.parse(text).body:
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault(node.name, _parse_class(node, lines))
                elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                    self.functions.setdefault(node.name, [_signature(node, drop_self=False)])
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    m = _VALUE.search(lines[node.lineno - 1])
                    self.module_attrs[node.target.id] = (m.group(1), m.group(2), int(m.group(3))) if m else None
        self.version = next((line.split("'")[1] for line in (root / "tensorrt" / "__init__.pyi").read_text().splitlines()
                             if line.startswith("__version__")), "10.x")

    def cls(self, path: str) -> ClassStub:
        """``"Builder"`` or ``"ILogger.Severity"``."""
        head, *rest = path.split(".")
        stub = self.classes[head]
        for part in rest:
            stub = self._find(stub, lambda c: c.nested.get(part)) or _raise(KeyError(path))
        return stub

    def _find(self, stub: ClassStub, get: Callable[[ClassStub], Any]) -> Any:
        """``get(stub)`` on the class or, failing that, its bases (depth first)."""
        seen: list[ClassStub] = [stub]
        while seen:
            c = seen.pop(0)
            found = get(c)
            if found is not None:
                return found
            seen += [self.classes[b] for b in c.bases if b in self.classes]
        return None

    def member_kind(self, cls: str, name: str) -> str | None:
        """``method`` / ``property`` / ``settable`` / ``member`` / ``class`` / None (absent)."""
        stub = self.cls(cls)
        if self._find(stub, lambda c: name in c.methods or None):
            return "method"
        setter = self._find(stub, lambda c: c.properties.get(name))
        if setter is not None:
            return "settable" if setter else "property"
        if self._find(stub, lambda c: name in c.attributes or None):
            return "settable"
        if self._find(stub, lambda c: name in c.members or None):
            return "member"
        if self._find(stub, lambda c: name in c.nested or None):
            return "class"
        return None

    def owner_of(self, cls: str, name: str) -> str:
        """The stub class that declares ``cls.name`` (``IPluginV3Layer.name`` -> ``ILayer``)."""
        def declares(c: ClassStub) -> str | None:
            return c.name if (name in c.methods or name in c.properties or name in c.attributes or name in c.members
                              or name in c.nested) else None
        found = self._find(self.cls(cls), declares)
        if found is None:
            return cls
        return cls if cls.endswith(found) else str(found)

    def signatures(self, cls: str | None, name: str) -> list[inspect.Signature]:
        if cls is None:
            return self.functions[name]
        return self._find(self.cls(cls), lambda c: c.methods.get(name)) or []

    def check_call(self, cls: str | None, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError unless some stub overload of ``cls.name`` accepts these arguments."""
        sigs = self.signatures(cls, name)
        for sig in sigs:
            try:
                sig.bind(*args, **kwargs)
                return
            except TypeError:
                continue
        where = f"tensorrt.{cls}.{name}" if cls else f"tensorrt.{name}"
        raise TypeError(f"{where} accepts none of these arguments in tensorrt-stubs {self.version}: "
                        f"{len(args)} positional, keywords {sorted(kwargs)}; stub overloads: {[str(s) for s in sigs]}")


def _raise(exc: Exception) -> Any:
    raise exc


@functools.lru_cache(maxsize=1)
def stub_index() -> StubIndex:
    return StubIndex()


class EnumValue:
    """One member of a stub enum (``trt.BuilderFlag.FP16``): ``name``, ``value``, int()."""

    def __init__(self, owner: str, name: str, value: int) -> None:
        self.owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and (self.owner, self.name) == (other.owner, other.name)

    def __hash__(self) -> int:
        return hash((self.owner, self.name))

    def __repr__(self) -> str:
        return f"<{self.owner}.{self.name}: {self.value}>"


class _StubMeta(type):
    """Class-level names (enum members, nested classes) and constructor calls, checked."""

    def __getattr__(cls, name: str) -> Any:
        fake: FakeTensorRT = cls.__dict__.get("_trt_fake") or _raise(AttributeError(name))
        stub_name: str = cls.__dict__["_trt_stub"]
        full = f"{stub_name}.{name}"
        kind = fake.index.member_kind(stub_name, name)
        if kind is None or full in fake.removed:
            raise AttributeError(f"tensorrt.{stub_name} has no attribute {name!r} (tensorrt-stubs {fake.index.version}"
                                 f"{', removed for this version' if full in fake.removed else ''})")
        fake.used.add(full)
        if kind == "member":
            value = fake.index._find(fake.index.cls(stub_name), lambda c: c.members.get(name))
            return EnumValue(stub_name.rsplit(".", 1)[-1], name, value)
        if kind == "class":
            return fake.cls(full)
        raise AttributeError(f"tensorrt.{stub_name}.{name} is an instance member; the stand-in accessed it on the class")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        fake: FakeTensorRT | None = cls.__dict__.get("_trt_fake")
        if fake is None:  # a test's own subclass (e.g. the calibrator): plain construction
            return super().__call__(*args, **kwargs)
        stub_name = cls.__dict__["_trt_stub"]
        fake.index.check_call(stub_name, "__init__", args, kwargs)
        fake.used.add(f"{stub_name}.__init__")
        factory = fake.constructors.get(stub_name)
        return factory(*args, **kwargs) if factory else super().__call__()


class StubObject(metaclass=_StubMeta):
    """An instance of a stubbed TensorRT class; members come from :meth:`FakeTensorRT.make`."""

    def __init__(self) -> None:
        object.__setattr__(self, "_members", {})

    def _stub_name(self) -> str | None:
        for klass in type(self).__mro__:  # a Python subclass (e.g. a calibrator) is checked as its stub base
            if "_trt_stub" in klass.__dict__:
                return str(klass.__dict__["_trt_stub"])
        return None

    def _fake(self) -> "FakeTensorRT":
        for klass in type(self).__mro__:
            if "_trt_fake" in klass.__dict__:
                return klass.__dict__["_trt_fake"]  # type: ignore[no-any-return]
        raise AttributeError("_trt_fake")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_members",):
            raise AttributeError(name)
        fake, cls = self._fake(), self._stub_name()
        assert cls is not None
        kind = fake.index.member_kind(cls, name)
        if kind is None or f"{cls}.{name}" in fake.removed:
            raise AttributeError(f"tensorrt.{cls} has no attribute {name!r} in tensorrt-stubs {fake.index.version}")
        fake.used.add(f"{cls}.{name}")
        members = object.__getattribute__(self, "_members")
        if name not in members:
            raise AttributeError(f"the stand-in for tensorrt.{cls} does not implement {name!r} (exists in the stubs)")
        value = members[name]
        if kind == "method":
            return _checked_method(fake, cls, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__class__" and isinstance(value, type) and issubclass(value, StubObject):
            object.__setattr__(self, name, value)  # re-classing a layer, as Polygraphy does with ILayer
            return
        fake, cls = self._fake(), self._stub_name()
        assert cls is not None
        kind = fake.index.member_kind(cls, name)
        if kind is None and not type(self).__dict__.get("_generated"):
            object.__setattr__(self, name, value)  # a Python subclass's own attribute (pybind11 trampolines allow it)
            return
        if kind != "settable" or f"{cls}.{name}" in fake.removed:
            raise AttributeError(f"tensorrt.{cls}.{name} cannot be set (tensorrt-stubs {fake.index.version}: {kind})")
        fake.used.add(f"{cls}.{name}")
        self._members[name] = value
        fake.writes.append((cls, name, value))


def _checked_method(fake: "FakeTensorRT", cls: str, name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        fake.index.check_call(cls, name, args, kwargs)
        return impl(*args, **kwargs)

    return call


class FakeTensorRT(types.ModuleType):
    """A ``tensorrt`` module made from the stubs; ``removed`` names play older/newer versions."""

    def __init__(self, *, version: str | None = None, removed: Iterable[str] = (),
                 functions: dict[str, Callable[..., Any]] | None = None,
                 constructors: dict[str, Callable[..., Any]] | None = None) -> None:
        super().__init__("tensorrt")
        self.index = stub_index()
        self.__version__ = version or self.index.version
        self.removed = set(removed)
        self.used: set[str] = set()
        self.writes: list[tuple[str, str, Any]] = []
        self._functions = dict(functions or {})
        self.constructors = dict(constructors or {})
        self._classes: dict[str, type] = {}
        for name in self._functions:
            if name not in self.index.functions:
                raise AttributeError(f"tensorrt.{name} is not a function in tensorrt-stubs {self.index.version}")
        for name in self.constructors:
            self.index.cls(name)  # KeyError for an invented class

    def cls(self, path: str) -> type:
        """The stand-in class for stub class ``path`` (created once)."""
        if path not in self._classes:
            self.index.cls(path)
            self._classes[path] = _StubMeta(path.rsplit(".", 1)[-1], (StubObject,),
                                            {"_trt_stub": path, "_trt_fake": self, "_generated": True})
        return self._classes[path]

    def make(self, cls: str, **members: Any) -> Any:
        """An instance of ``cls`` whose members (methods, properties, attributes) the test supplies."""
        klass = self.cls(cls)
        obj = object.__new__(klass)  # not through the stub constructor: TensorRT creates these objects
        StubObject.__init__(obj)
        for name, value in members.items():
            kind = self.index.member_kind(cls, name)
            if kind is None or kind in ("member", "class"):
                raise AttributeError(f"stand-in invents tensorrt.{cls}.{name}: not an instance member in "
                                     f"tensorrt-stubs {self.index.version}")
            obj._members[name] = value
        return obj

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self.removed:
            raise AttributeError(f"module 'tensorrt' has no attribute {name!r} (removed for this version)")
        if name in self.index.classes:
            self.used.add(name)
            return self.cls(name)
        if name in self.index.functions:
            self.used.add(name)
            impl = self._functions.get(name) or _raise(AttributeError(f"the stand-in does not implement tensorrt.{name}"))
            return _checked_function(self, name, impl)
        if name in self.index.module_attrs:
            self.used.add(name)
            enum = self.index.module_attrs[name]
            if enum is None:
                raise AttributeError(f"the stand-in does not implement tensorrt.{name}")
            return EnumValue(*enum)  # e.g. trt.float32 is DataType.FLOAT
        raise AttributeError(f"module 'tensorrt' has no attribute {name!r} in tensorrt-stubs {self.index.version}")


def _checked_function(fake: FakeTensorRT, name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        fake.index.check_call(None, name, args, kwargs)
        return impl(*args, **kwargs)

    return call


#: Names absent from TensorRT 11.x (strongly typed only; calibrators and precision flags removed).
TRT11_REMOVED = ("BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
                 "BuilderFlag.PREFER_PRECISION_CONSTRAINTS", "IInt8Calibrator", "IInt8EntropyCalibrator",
                 "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator",
                 "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile",
                 "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "Builder.platform_has_fast_fp16",
                 "Builder.platform_has_fast_int8")
#: Names TensorRT 8.6 does not have yet (strong typing from 9.x, IPluginV3 from 10.0).
TRT86_REMOVED = ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", "LayerType.PLUGIN_V3", "IPluginV3Layer",
                 "IPluginV3", "PluginCapabilityType", "IPluginRegistry.get_creator")


def fake_tensorrt(line: str = "10", **kwargs: Any) -> FakeTensorRT:
    """A stand-in ``tensorrt`` for ``line`` "8.6", "10" or "11" (by removing names from the 10.x stubs)."""
    removed = {"8.6": TRT86_REMOVED, "10": (), "11": TRT11_REMOVED}[line]
    version = kwargs.pop("version", None) or {"8.6": "8.6.1.6", "10": None, "11": "11.1.0.0"}[line]
    return FakeTensorRT(version=version, removed=(*removed, *kwargs.pop("removed", ())), **kwargs)

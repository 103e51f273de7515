"""One registry shape for methods, metrics, analyses and data set kinds (as timm's model registry).

`register` refuses a duplicate name; `get` gives the one "unknown X; known: ..." error; metadata lives on
the registered entry itself. Third-party entries need no fork: a name of the form `package.module:attr`
is imported on first use, and installed packages may declare entries in the entry-point group
`camexp.<kind>s` (e.g. `[project.entry-points."camexp.methods"] my_cam = "mypkg.cams:my_cam"`). Both go
through the registry's `coerce`, so they obey the same contract as the built-in entries.
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Generic, TypeVar

from camexp.errors import CamexpError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; `coerce(name, obj)` turns a third-party object into an entry (or raises).
    `plugins=False`: only entries registered in code (a registry keyed by another registry's names)."""

    def __init__(
        self, kind: str, coerce: Callable[[str, Any], T] | None = None, group: str | None = None, plugins: bool = True
    ):
        self.kind = kind
        self.plugins = plugins
        self.group = group or f"camexp.{kind.replace(' ', '_')}s"
        self._coerce = coerce
        self._entries: dict[str, T] = {}
        # name -> the plug-in entry resolved under it (kept, so that an id is never reused for another object)
        self._plugins: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name`; a name registered twice is a programming error, never a silent overwrite."""
        if name in self._entries:
            raise CamexpError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except CamexpError:
            return False
        return True

    def get(self, name: str) -> T:
        """The entry called `name`: built-in, an installed entry point, or an import path `module:attr`."""
        if name in self._entries:
            return self._entries[name]
        self._load_entry_points()
        if name in self._entries:
            return self._entries[name]
        if ":" in name and self.plugins:
            return self.register(name, self._import(name))
        raise CamexpError(
            f"unknown {self.kind} {name!r}; known: {self.names()} (or a plug-in as 'package.module:attribute')"
        )

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def unknown(self, names: list[str]) -> list[str]:
        """The names in `names` that resolve to nothing."""
        return [n for n in names if n not in self]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_entry_points()
        return iter(list(self._entries.items()))

    def plugin_failure(self, names: list[str]) -> str:
        """Why the first plug-in name (`module:attr`) among `names` resolves to nothing -- its module cannot be
        imported (with the plug-in's traceback below when its own code failed), or the object is not an entry of
        this kind -- '' if none is a plug-in name: a config check says that rather than 'unknown'."""
        for name in names:
            if ":" in name and self.plugins:
                try:
                    self.get(name)
                except CamexpError as e:
                    return str(e)
        return ""

    def plugin_name(self, entry: object) -> str | None:
        """The name a plug-in entry was resolved under ('module:attr' or an entry point's), None for a built-in."""
        return next((name for name, known in self._plugins.items() if known is entry), None)

    @contextmanager
    def running(self, entry: object, what: str, code: object) -> Iterator[None]:
        """Run a plug-in entry's `code` (its function or class; a built-in's runs as it is): an exception it raises
        becomes one CamexpError naming the plug-in and `what` it was doing, with its own traceback below (its
        author's bug, not camexp's). A CamexpError it raises is its own one-line refusal and passes."""
        try:
            yield
        except CamexpError:
            raise
        except Exception as e:
            name = self.plugin_name(entry)
            if name is None:
                raise
            module = getattr(code, "__module__", None)
            raise CamexpError(
                f"{self.kind} plug-in {name!r} raised in {what}: {e.__class__.__name__}: {e}{own_traceback(e, module)}"
            ) from None

    def _import(self, path: str) -> T:
        module, _, attr = path.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as e:  # whatever a plug-in's module raises while it is imported: its author's bug
            raise CamexpError(
                f"{self.kind} {path!r}: cannot import it ({e.__class__.__name__}: {e}){_not_found(e, module)}"
                f"{own_traceback(e, module)}"
            ) from None
        return self._as_entry(path, obj)

    def _as_entry(self, name: str, obj: Any) -> T:
        """A plug-in object as an entry (its contract checked by `coerce`), remembered as a plug-in's."""
        try:
            entry = obj if self._coerce is None else self._coerce(name, obj)
        except (TypeError, ValueError) as e:
            raise CamexpError(f"{self.kind} {name!r}: {e}") from None
        self._plugins[name] = entry
        return entry

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.plugins:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name not in self._entries:
                try:
                    self.register(ep.name, self._as_entry(ep.name, ep.load()))
                except Exception as e:  # whatever a third-party package raises, name the entry point that did
                    raise CamexpError(
                        f"entry point {ep.name!r} in group {self.group!r} ({ep.value}) failed to "
                        f"load: {e.__class__.__name__}: {e}{own_traceback(e, ep.module)}"
                    ) from None


def own_traceback(exc: BaseException, module: str | None) -> str:
    """The part of `exc`'s traceback from the first frame of `module` (a plug-in's code) on, as a block of
    lines to put below a one-line error: the plug-in's author needs it; camexp's and importlib's frames
    before it are noise. '' when no frame ran in `module` (e.g. a module that does not exist); the whole
    traceback when the module is not known (None)."""
    tb = exc.__traceback__
    while tb is not None and module is not None and tb.tb_frame.f_globals.get("__name__") != module:
        tb = tb.tb_next
    if tb is None:
        return ""
    return "\n" + "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def _not_found(e: Exception, module: str) -> str:
    """For a plug-in module that is not there: where Python looked, which is what the user fixes."""
    if isinstance(e, ModuleNotFoundError) and e.name and (module == e.name or module.startswith(e.name + ".")):
        return f"; is {e.name!r} installed in this environment, or its folder on PYTHONPATH?"
    return ""


def call_problem(fn: Callable[..., Any], *args: str) -> str:
    """'' if `fn` can be called with the positional arguments named `args` (as camexp calls it), else what its
    signature gets wrong. A callable whose signature cannot be read (a builtin) is left to the call."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ""
    try:
        sig.bind(*args)
    except TypeError as e:
        bare = sig.replace(  # the names its author reads, without annotations
            parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()], return_annotation=sig.empty
        )
        return f"{getattr(fn, '__qualname__', fn)}{bare} cannot be called as ({', '.join(args)}): {e}"
    return ""


def callable_entry(what: str) -> Callable[[str, Any], Any]:
    """A `coerce` that accepts any callable (a factory or function) and names `what` was expected otherwise."""

    def coerce(name: str, obj: Any) -> Any:
        if not callable(obj):
            raise TypeError(f"expected {what}, got {type(obj).__name__}")
        return obj

    return coerce

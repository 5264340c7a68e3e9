"""Name -> component registries, so configs pick components by name.

Each module registers its components at import time; an unknown name is an error
that lists what is allowed.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A mapping from names to components with clear errors."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(item: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._items[name] = item
      return item
    return decorator

  def get(self, name: str, field: str | None = None) -> T:
    if name not in self._items:
      where = f" (config field {field})" if field else ""
      hint = ""
      if isinstance(name, str) and name[:1] in "([" and field:
        # `--config.attacks=(end_to_end,)` arrives as one string: the flag
        # parser reads a tuple only when its names are quoted.
        hint = (f"; on the command line quote each name: "
                f"\"--config.{field}=('a','b')\"")
      raise ValueError(f"unknown {self.kind} {name!r}{where}; allowed: "
                       f"{sorted(self._items)}{hint}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items


def import_members(package_name: str, path: Iterable[str]) -> list[str]:
  """Imports every module of a package, so each registers itself (no
  hand-kept list); returns their names."""
  names = [m.name for m in pkgutil.iter_modules(path)]
  for name in names:
    importlib.import_module(f"{package_name}.{name}")
  return names


def import_plugins(modules: Iterable[str], field: str = "imports") -> None:
  """Imports modules named by the config (components outside the package
  register themselves on import), with a clear error for a missing one."""
  if isinstance(modules, str):
    raise ValueError(f"config.{field} must be a tuple of module names, got "
                     f"{modules!r}")
  for name in modules:
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      raise ValueError(f"config.{field}: cannot import {name!r} ({e})") from e

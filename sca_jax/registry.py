"""Name -> component registries, so configs pick components by name.

Each module registers its components at import time; an unknown name is an error
that lists what is allowed.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

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
      raise ValueError(
          f"unknown {self.kind} {name!r}{where}; allowed: {sorted(self._items)}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items

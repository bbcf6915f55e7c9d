"""Reading OpenAI request bodies: lenient about fields it does not know (clients send ``user``,
``store``, ``metadata``...: they are ignored and listed in the ``x-genmesh-ignored-fields`` response
header), strict about the types of the ones it uses (400 naming the parameter). Ranges are the
services' to check (``servers.web.errors``), except for a number too large for its proto field,
which never reaches a service: it is refused here by the same limit (``servers.diffusion.params``).

Each route's parameters are declared once, as ``Param`` specs: the handler reads the body by them
(a field not among them is an ignored one; reading one as another kind than its spec says is a bug
the tests catch) and the OpenAPI document describes the route from them (``servers/web/contract.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from genmesh.errors import InvalidArgument
from servers.diffusion.params import Limit, Text
from servers.web.errors import invalid

IGNORED_HEADER = "x-genmesh-ignored-fields"
# What may stand in a header value as it is; anything else in a field's name is percent-encoded.
_HEADER_SAFE = "!#$&'()*+-./:;<=>?@[]^_`{|}~"


def ignored_header(names: Iterable[str]) -> str:
    """The ignored fields' names for the ``x-genmesh-ignored-fields`` header, comma-separated. A name
    is the caller's: one outside printable ASCII (or with a comma) would make the header invalid and
    the whole answer fail, so such characters are percent-encoded (UTF-8; a lone surrogate, which JSON
    allows, as its 3 bytes)."""
    return ",".join(quote(name, safe=_HEADER_SAFE, errors="surrogatepass") for name in names)


_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    for name, kinds in _KINDS.items():
        if isinstance(value, kinds) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return type(value).__name__


def check(value: Any, kind: str, param: str) -> Any:
    """``value`` if it is a JSON ``kind`` (a boolean is never a number), else a 400 naming ``param``."""
    if isinstance(value, bool) and kind != "boolean":
        ok = False
    elif kind == "integer" and isinstance(value, float):
        ok = value.is_integer()  # 3.0 is the integer 3 in JSON
        value = int(value) if ok else value
    else:
        ok = isinstance(value, _KINDS[kind])
    if not ok:
        raise invalid(param, f"{param}: expected {kind}, got {type_name(value)}")
    return value


@dataclass(frozen=True)
class Param:
    """One parameter a route reads: its JSON kind (``"string|array"`` when it takes either), what it
    means, and what it allows: the service's own ``limit`` for it (``servers.diffusion.params``),
    ``choices``, or a JSON Schema for shapes a kind cannot say (``messages``, ``tools``)."""

    name: str
    kind: str
    description: str
    limit: Limit | Text | None = None
    choices: tuple[Any, ...] = ()
    schema: Mapping[str, Any] = field(default_factory=dict)
    required: bool = False
    file: bool = False  # a multipart file part

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.kind.split("|"))


def _names(used: Iterable[Param | str]) -> dict[str, Param | None]:
    """Name -> spec; a bare name (tests) has none."""
    specs: dict[str, Param | None] = {}
    for item in used:
        if isinstance(item, str):
            specs[item] = None
        else:
            specs[item.name] = item
    return specs


def _checked_kind(specs: Mapping[str, Param | None], name: str, kind: str) -> None:
    """A handler reads only what its route declares, as declared: else the contract would lie."""
    if specs and name not in specs:  # (a test's bare Body(data, ()) declares nothing)
        raise TypeError(f"{name} is read but is not one of the route's Params")
    spec = specs.get(name)
    if spec is not None and kind not in spec.kinds:
        raise TypeError(f"{name} is read as {kind} but its Param says {spec.kind}")


class Body:
    """A JSON object's fields, read by name and type; the names never read are the ignored ones."""

    def __init__(self, data: Any, used: Iterable[Param | str]) -> None:
        if not isinstance(data, dict):
            raise invalid(None, f"the request body must be a JSON object (got {type_name(data)})")
        self.data: Mapping[str, Any] = data
        self.specs = _names(used)
        self.ignored = sorted(set(data) - set(self.specs))

    def get(self, name: str, kind: str, default: Any = None) -> Any:
        """The field as ``kind``; absent or null gives ``default``."""
        _checked_kind(self.specs, name, kind)
        value = self.data.get(name)
        return default if value is None else check(value, kind, name)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None


class Form:
    """A multipart form's text fields, converted to the same JSON kinds as a body's."""

    def __init__(self, fields: Mapping[str, str], used: Iterable[Param | str]) -> None:
        self.fields = fields
        self.specs = _names(used)
        self.ignored = sorted(set(fields) - set(self.specs))

    def get(self, name: str, kind: str, default: Any = None) -> Any:
        _checked_kind(self.specs, name, kind)
        raw = self.fields.get(name)
        if raw is None or raw == "":
            return default
        try:
            if kind == "integer":
                return int(raw)
            if kind == "number":
                return float(raw)
            if kind == "boolean":
                if raw.lower() not in ("true", "false"):
                    raise ValueError(raw)
                return raw.lower() == "true"
        except ValueError:
            raise invalid(name, f"{name}: expected {kind}, got {raw!r}") from None
        return raw

    def has(self, name: str) -> bool:
        return bool(self.fields.get(name))


def parse_size(value: str | None, param: str = "size") -> tuple[int | None, int | None]:
    """``"512x768"`` -> (512, 768); ``None`` or ``"auto"`` -> the service's defaults."""
    if value is None or value == "auto":
        return None, None
    width, sep, height = value.partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise invalid(param, f"{param}: expected WIDTHxHEIGHT in pixels such as 512x512, or auto (got {value!r})")
    return int(width), int(height)


def assign(message: Any, name: str, value: Any, param: str, limits: Mapping[str, Any] | None = None) -> None:
    """Set a proto field; a number its wire type cannot hold is a 400 naming ``param``, with the
    field's range from ``limits`` (the service's own spec) when it has one."""
    try:
        setattr(message, name, value)
    except (ValueError, TypeError):
        limit = (limits or {}).get(name)
        if limit is not None:
            try:
                limit.check(value, param)
            except InvalidArgument as exc:
                raise invalid(param, exc.message) from None
        raise invalid(param, f"{param}: {value!r} is out of range") from None


def assign_size_and_extras(
    message: Any, fields: Body | Form, extras: Iterable[Param], limits: Mapping[str, Any]
) -> tuple[int | None, int | None]:
    """What an image and a video request take alike: ``size`` (``WIDTHxHEIGHT`` or auto) and genmesh's
    own fields by their genmesh names, each checked against the service's ``limits``; the size returned."""
    width, height = parse_size(fields.get("size", "string"))
    if width is not None:
        assign(message, "width", width, "size", limits)
        assign(message, "height", height, "size", limits)
    for extra in extras:
        value = fields.get(extra.name, extra.kind)
        if value is not None:
            assign(message, extra.name, value, extra.name, limits)
    return width, height

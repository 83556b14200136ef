"""jinja2 templates, one Environment per package (vm, kmod), each package
rendering only its own `templates/` folder.

StrictUndefined: a template that names a value the caller did not pass is a
bug, and it must fail loudly rather than render an empty string.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.cache
def environment(package: str) -> jinja2.Environment:
    """The Environment over `package`'s templates/ folder (e.g. "vm")."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # config files and argv, not HTML
    )
    env.filters["qemu_opt"] = qemu_opt
    return env


def qemu_opt(value: object) -> str:
    """Escape a value inside a QEMU -option list, where ',' separates keys."""
    return str(value).replace(",", ",,")


class Templates:
    """The templates of one package: `Templates(__package__).render("x.j2", ...)`."""

    def __init__(self, package: str) -> None:
        self.package = package

    def render(self, template: str, /, **context: Any) -> str:
        """Render `template` (a file name under the package's templates/) with `context`."""
        return environment(self.package).get_template(template).render(**context)

    def render_argv(self, template: str, /, **context: Any) -> list[str]:
        """Render a template that lists one argument per line into an argv list.

        Blank lines are dropped, so conditionals can leave gaps; no shell quoting
        is involved at any point.
        """
        text = self.render(template, **context)
        return [line.strip() for line in text.splitlines() if line.strip()]

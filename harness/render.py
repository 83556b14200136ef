"""The one jinja2 Environment that renders every template of the project.

StrictUndefined: a template that names a value the caller did not pass is a
bug, and it must fail loudly rather than render an empty string.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    loader = jinja2.PrefixLoader(
        {
            "vm": jinja2.PackageLoader("vm", "templates"),
            "kmod": jinja2.PackageLoader("kmod", "templates"),
        }
    )
    env = jinja2.Environment(
        loader=loader,
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


def render(template: str, /, **context: Any) -> str:
    """Render `template` (e.g. "vm/ssh_config.j2") with `context`."""
    return environment().get_template(template).render(**context)


def render_argv(template: str, /, **context: Any) -> list[str]:
    """Render a template that lists one argument per line into an argv list.

    Blank lines are dropped, so conditionals can leave gaps; no shell quoting
    is involved at any point.
    """
    return [line.strip() for line in render(template, **context).splitlines() if line.strip()]

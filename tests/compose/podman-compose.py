"""Debian bookworm's podman-compose (1.0.3), with its variable interpolation fixed.

1.0.3 leaves ``${VAR:-}`` (an empty default, as docker-compose.yml writes for its optional
provider keys) in place, so the containers would get the literal text ``${OPENAI_API_KEY:-}``
as a key. Later podman-compose releases accept an empty default; this is their pattern.
Run with Debian's python3: ``python3 tests/compose/podman-compose.py -f docker-compose.yml up``.
"""

import re
import sys

import podman_compose  # type: ignore[import-not-found]  # Debian's, for /usr/bin/python3

podman_compose.var_re = re.compile(
    r"""
    \$(?:
        (?P<escaped>\$) |
        (?P<named>[_a-zA-Z][_a-zA-Z0-9]*) |
        (?:{
            (?P<braced>[_a-zA-Z][_a-zA-Z0-9]*)
            (?:
                (?::?-(?P<default>[^}]*)) |
                (?::?\?(?P<err>[^}]*))
            )?
        })
    )
    """,
    re.VERBOSE,
)

if __name__ == "__main__":
    sys.argv[0] = "podman-compose"
    podman_compose.main()

"""A minimal ``multipart/form-data`` parser for the fake OpenAI server.

Starlette's ``Request.form()`` needs python-multipart, which the project does not depend on;
this covers what HTTP clients (httpx in the ``openai`` package) send: CRLF line breaks, a
``Content-Disposition: form-data; name=...`` header per part, binary file bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["FormData", "UploadedFile", "parse_form_data"]

_PARAM = re.compile(r';\s*([\w*-]+)="((?:[^"\\]|\\.)*)"|;\s*([\w*-]+)=([^;\s]+)')


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class FormData:
    #: Text fields; a repeated name (``include[]``) keeps every value, in order.
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else default

    def get_list(self, name: str) -> list[str]:
        # Clients disagree on list syntax: ``include[]=a`` (httpx via openai) or ``include=a``.
        return self.fields.get(name, []) + self.fields.get(f"{name}[]", [])


def _params(header_value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for quoted_key, quoted, bare_key, bare in _PARAM.findall(header_value):
        if quoted_key:
            params[quoted_key.lower()] = re.sub(r"\\(.)", r"\1", quoted)
        else:
            params[bare_key.lower()] = bare
    return params


def parse_form_data(content_type: str, body: bytes) -> FormData:
    """Parse a ``multipart/form-data`` body; raises ``ValueError`` saying what is wrong."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError(f"expected multipart/form-data, got {content_type or 'no content type'}")
    boundary = _params(content_type).get("boundary")
    if not boundary:
        raise ValueError("multipart/form-data without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    # chunks[0] is the preamble; the close delimiter leaves a final chunk starting with "--".
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise ValueError("multipart body is not terminated by its closing boundary")
    form = FormData()
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("malformed multipart part (expected CRLF around boundaries)")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part has no header/body separator")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = _params(disposition)
        if not disposition.lower().startswith("form-data") or "name" not in params:
            raise ValueError("multipart part without Content-Disposition: form-data; name=...")
        if "filename" in params:
            form.files[params["name"]] = UploadedFile(
                filename=params["filename"],
                content_type=headers.get("content-type", "application/octet-stream"),
                data=data,
            )
        else:
            form.fields.setdefault(params["name"], []).append(data.decode("utf-8"))
    return form

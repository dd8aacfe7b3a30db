"""The form of ``POST /v1/stylize``: read through ``uploads.MeteredUpload`` and checked field by field into a
``StylizeJob`` (everything the inference thread needs); a field the client got wrong is a ``RequestError`` 4xx
naming the field and its value."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import StylizeError
from nst_fast.serve.errors import CLOSE, RequestError, busy_error
from nst_fast.serve.registry import ModelRegistry, ServedModel, UnknownModelError
from nst_fast.serve.settings import ServeSettings
from nst_fast.serve.uploads import MeteredUpload, UploadBudget
from nst_fast.stylize.styles import parse_style_weights

#: ``format`` field -> (Pillow format, Content-Type).
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
#: The fields of ``POST /v1/stylize`` (``image`` is the file).
STYLIZE_FIELDS = ("image", "model", "style", "strength", "preserve_color", "max_size", "format")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass
class StylizeJob:
    """A parsed ``POST /v1/stylize``: everything the inference thread needs."""

    data: bytes
    filename: str
    model: ServedModel
    weights: np.ndarray | None
    preserve_color: bool
    max_size: int | None
    output_format: str


def form_message(error: StylizeError) -> str:
    """``parse_style_weights``'s message in the form's terms (it names the command line's options)."""
    return str(error).replace("--style", "style").replace("--strength", "strength")


def text_field(form: Any, name: str) -> str | None:
    """A text field's value (``None`` when absent or empty, as HTML forms send unset fields)."""
    values = form.getlist(name)
    if len(values) > 1:
        raise RequestError(400, f"field {name!r} was sent {len(values)} times; send it once")
    if not values:
        return None
    if not isinstance(values[0], str):
        raise RequestError(400, f"field {name!r} must be a text value, not a file")
    return values[0].strip() or None


def parse_strength(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise RequestError(400, f"strength {text!r} is not a number; send a number in [0, 1]") from None


def parse_bool(text: str | None, name: str) -> bool:
    if text is None:
        return False
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise RequestError(400, f"{name} {text!r} is not a boolean; send true or false")


def parse_max_size(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < MIN_SIDE:
        raise RequestError(400, f"max_size {text!r} must be a whole number of pixels >= {MIN_SIDE}")
    return value


def check_headers(request: Request, settings: ServeSettings, budget: UploadBudget) -> None:
    """Refuse before reading the body: not multipart (400), a declared length over the limit (413) or over what
    the upload budget has room for now (503)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):  # media types are case-insensitive
        raise RequestError(
            400,
            f"send multipart/form-data with the image in the file field 'image' "
            f"(got Content-Type {content_type or 'none'!r})",
            CLOSE,
        )
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return
    if int(length) > settings.max_upload_bytes:
        raise RequestError(
            413,
            f"the upload ({length} bytes) is over the limit of {settings.max_upload_bytes} bytes; send a smaller file",
            CLOSE,
        )
    if int(length) > budget.room:
        raise busy_error("uploads_full", f"{budget.uploads} uploads coming in", settings.retry_after_s)


def checked_upload(form: Any) -> UploadFile:
    """The form's one image file, after refusing unknown fields."""
    unknown = sorted(set(form.keys()) - set(STYLIZE_FIELDS))
    if unknown:
        raise RequestError(
            400, f"unknown field {unknown[0]!r}; the fields are: image (file), " + ", ".join(STYLIZE_FIELDS[1:])
        )
    uploads = form.getlist("image")
    if not uploads:
        raise RequestError(400, "no image: send the photo in the file field 'image'")
    if len(uploads) > 1 or not isinstance(uploads[0], UploadFile):
        raise RequestError(400, "field 'image' must be one uploaded file (multipart file part with a filename)")
    return uploads[0]


async def job_from_form(form: Any, registry: ModelRegistry) -> StylizeJob:
    """Check every field of a parsed form; the job to run."""
    upload = checked_upload(form)
    try:
        served = registry.get(text_field(form, "model"))
    except UnknownModelError as error:
        raise RequestError(404, str(error)) from None
    output_format = (text_field(form, "format") or "png").lower()
    if output_format not in OUTPUT_FORMATS:
        raise RequestError(400, f"format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    try:
        weights = parse_style_weights(
            served.model, text_field(form, "style"), parse_strength(text_field(form, "strength"))
        )
    except StylizeError as error:
        raise RequestError(400, f"model {served.name!r}: {form_message(error)}") from None
    return StylizeJob(
        data=await upload.read(),
        filename=os.path.basename(upload.filename or "") or "upload",
        model=served,
        weights=weights,
        preserve_color=parse_bool(text_field(form, "preserve_color"), "preserve_color"),
        max_size=parse_max_size(text_field(form, "max_size")),
        output_format=output_format,
    )


async def read_stylize_form(
    request: Request, registry: ModelRegistry, settings: ServeSettings, budget: UploadBudget, deadline: float
) -> StylizeJob:
    """Receive (``MeteredUpload``: size, budget, rate, ``deadline``) and check the form of ``POST /v1/stylize``."""
    check_headers(request, settings, budget)
    upload = MeteredUpload(request.receive, budget, settings, deadline)
    budget.count(1)
    try:
        async with Request(request.scope, upload).form(max_files=1, max_fields=len(STYLIZE_FIELDS)) as form:
            return await job_from_form(form, registry)
    finally:
        upload.release()
        budget.count(-1)

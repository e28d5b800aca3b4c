"""Turn a notification job into email and SMS text with Jinja2.

Pure on purpose: the only I/O is reading templates, so delivery can render (and fail permanently on
a bad template) before it spends an attempt on a provider. User content is always template *data*,
never template source: nothing here calls `from_string`, so a job cannot inject Jinja code.

The context contract (which keys each template needs) is in `notifier/templates/README.md`. One
Jinja trap worth knowing: `content.items` is the dict method, not the key; templates write
`content["items"]`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.nodes import EvalContext
from jinja2.utils import missing
from markupsafe import Markup, escape

from notifier.errors import ConfigError, PermanentDeliveryError, TemplateRenderError
from notifier.pipeline.sms_length import fit_sms, sms_units

NOTIFICATION_TYPES = ("immediate", "milestone", "digest")
# Twilio's limit for one message body (SMS and WhatsApp), measured in GSM-7 septets or UTF-16
# units (`sms_length`), which never exceed the characters Twilio counts.
SMS_MAX_CHARS = 1600
SUBJECT_MAX_CHARS = 200
# Content fields a job must carry (present, not null, not blank); everything else is optional.
REQUIRED_CONTENT: Mapping[str, tuple[str, ...]] = {
    "immediate": ("body",),
    "milestone": ("body",),
    "digest": ("items",),
}
_DEFAULT_SUBJECT = {"immediate": "New update", "milestone": "Milestone reached"}
_TIME_FORMAT = "%d %b %Y, %H:%M %Z"  # "29 Mar 2026, 08:00 CEST"


@dataclass(frozen=True)
class RenderedEmail:
    """One email in its three parts; `subject` is already a safe single header line."""

    subject: str
    html: str
    text: str


def default_template_dir() -> Path:
    """The stock templates, shipped as package data (`notifier/templates/`); callers pass their
    own directory (NOTIFIER_TEMPLATE_DIR) to override them."""
    return Path(str(importlib.resources.files("notifier") / "templates"))


def list_unsubscribe_headers(unsubscribe_url: str | None) -> dict[str, str]:
    """Mail headers that let inbox providers show an unsubscribe button (RFC 2369, RFC 8058).

    One-click (`List-Unsubscribe-Post`) is only valid with an HTTPS URL, so an `http://` URL (local
    development) gets the plain `List-Unsubscribe` header alone. A URL that could break out of the
    header is refused rather than sent.
    """
    if not unsubscribe_url:
        return {}
    if any(ch in unsubscribe_url for ch in "<>\r\n\t ") or _http_url(unsubscribe_url) is None:
        raise PermanentDeliveryError(
            f"unsubscribe URL {unsubscribe_url!r} cannot go in a mail header: "
            "it must be a plain http(s) URL; check UNSUBSCRIBE_URL_BASE"
        )
    headers = {"List-Unsubscribe": f"<{unsubscribe_url}>"}
    if unsubscribe_url.lower().startswith("https://"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


class Renderer:
    """Renders `email/<type>.html|.txt` and `sms/<type>.txt` from one template directory.

    HTML templates autoescape; `.txt` templates do not, so the plain-text part shows user content
    as written. Undefined values are strict: a template that needs a field the job lacks fails
    with a `TemplateRenderError` naming it, instead of sending an email with a hole in it.
    """

    def __init__(self, template_dir: Path) -> None:
        if not template_dir.is_dir():
            raise ConfigError(f"template directory {template_dir} does not exist")
        self.template_dir = template_dir
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_dir),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False
            ),
            undefined=_NamedUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=lambda value: "" if value is None else value,  # JSON null prints as nothing
            # Templates are read once per process: checking each file's mtime on every render
            # cost a worker ~7 % of its time (py-spy). Edited templates apply on restart.
            auto_reload=False,
        )
        self._env.filters.update(nl2br=_nl2br, localtime=_localtime, http_url=_http_url)

    def email(self, notification_type: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render the email for one job; raises `TemplateRenderError` on any template problem."""
        html_name = f"email/{notification_type}.html"
        ctx = _prepare(notification_type, context, html_name)
        html = self._render(html_name, ctx)
        text = self._render(f"email/{notification_type}.txt", ctx)
        return RenderedEmail(subject=ctx["subject"], html=html, text=text)

    def text(self, notification_type: str, context: Mapping[str, Any]) -> str:
        """Render the SMS / WhatsApp body, cut to fit `SMS_MAX_CHARS`.

        The content body is shortened first (ending in "…") so the template's framing, such as
        the group name and a link, survives; only a template that is too long by itself is cut
        at its end.
        """
        name = f"sms/{notification_type}.txt"
        ctx = _prepare(notification_type, context, name)
        message = self._render(name, ctx).strip()
        content = ctx["content"]
        body = content.get("body")
        # Shorten the body by what the message is over, measured on the rendered message (its
        # encoding may differ from the body's alone); a few rounds settle it.
        budget = sms_units(body) if isinstance(body, str) else 0
        for _ in range(4):
            over = sms_units(message) - SMS_MAX_CHARS
            if over <= 0 or not isinstance(body, str) or budget - over < 1:
                break
            budget -= over
            short = fit_sms(body, budget)
            message = self._render(name, {**ctx, "content": {**content, "body": short}}).strip()
        return fit_sms(message, SMS_MAX_CHARS)

    def _render(self, name: str, ctx: Mapping[str, Any]) -> str:
        try:
            return self._env.get_template(name).render(ctx)
        except jinja2.TemplateNotFound as exc:
            raise TemplateRenderError(
                f"template {exc.name} does not exist in {self.template_dir}"
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateRenderError(
                f"template {exc.name or name} has a syntax error on line {exc.lineno}: "
                f"{exc.message}"
            ) from exc
        except jinja2.UndefinedError as exc:
            raise TemplateRenderError(
                f"template {name} needs {_missing_path(exc, ctx)!r}, which the job does not have"
            ) from exc
        except (jinja2.TemplateError, TypeError, ValueError, OverflowError) as exc:
            # Malformed job data (a number where a list belongs, a date past year 9999 in the
            # recipient's zone, ...): retrying cannot fix it.
            raise TemplateRenderError(f"template {name} could not be rendered: {exc}") from exc


def _prepare(notification_type: str, context: Mapping[str, Any], template: str) -> dict[str, Any]:
    """Check the job against the documented contract and add what the templates compute on."""
    if notification_type not in NOTIFICATION_TYPES:
        raise TemplateRenderError(
            f"unknown notification type {notification_type!r} (no template {template}); "
            f"expected one of {', '.join(NOTIFICATION_TYPES)}"
        )
    content = context.get("content")
    if not isinstance(content, Mapping):
        raise TemplateRenderError(
            f"template {template} needs 'content' as a JSON object, which the job does not have"
        )
    for field in REQUIRED_CONTENT[notification_type]:
        value = content.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise TemplateRenderError(
                f"template {template} needs 'content.{field}', which the job does not have"
            )
    extra: dict[str, Any] = {}
    if notification_type == "digest":
        if not isinstance(content["items"], list):
            raise TemplateRenderError(f"template {template} needs 'content.items' to be a list")
        count = content.get("item_count")
        extra["item_count"] = count if isinstance(count, int) else len(content["items"])
        noun = "update" if extra["item_count"] == 1 else "updates"
        default = f"Your digest: {extra['item_count']} {noun}"
    else:
        default = _DEFAULT_SUBJECT[notification_type]
    raw_subject = content.get("subject")
    if raw_subject is not None and not isinstance(raw_subject, str):
        # Refused at enqueue too (20261201000600); a legacy row must not print a Python repr.
        raise TemplateRenderError(
            f"content.subject must be a string, got {type(raw_subject).__name__}"
        )
    subject = clean_subject(raw_subject) or default
    optional = {"group": None, "preferences_url": None, "unsubscribe_url": None}
    return {**optional, **context, **extra, "subject": subject}


def clean_subject(value: object) -> str:
    """A single header-safe line: control characters become spaces, runs collapse, at most 200.

    CR/LF in a subject would split the mail header; other control characters render as garbage.
    """
    if value is None:
        return ""
    text = "".join(" " if ord(ch) < 32 or 127 <= ord(ch) < 160 else ch for ch in str(value))
    return _shorten(" ".join(text.split()), SUBJECT_MAX_CHARS)


def _shorten(text: str, limit: int) -> str:
    """At most `limit` characters, ending in "…" when cut, at a word boundary if one is near."""
    if len(text) <= limit:
        return text
    if limit < 1:
        return ""
    cut = text[: limit - 1]
    boundary = max(cut.rfind(" "), cut.rfind("\n"))
    if boundary > 0 and boundary >= len(cut) - 30:
        cut = cut[:boundary]
    return cut.rstrip() + "…"


@jinja2.pass_eval_context
def _nl2br(eval_ctx: EvalContext, value: object) -> str:
    """Plain text with its line breaks kept in HTML: escape first, then join lines with <br>."""
    if value is None:
        return ""
    if not eval_ctx.autoescape:
        return str(value)
    return Markup("<br>\n").join(escape(value).splitlines())


def _localtime(value: object, zone: object = None, fmt: str = _TIME_FORMAT) -> str:
    """An ISO 8601 instant shown in the recipient's zone; a missing or unknown zone means UTC."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # let the strict undefined name the missing field
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise TemplateRenderError(f"{value!r} is not an ISO 8601 timestamp") from None
    local: tzinfo = UTC
    if isinstance(zone, str) and zone:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError, OSError):
            local = ZoneInfo(zone)
    try:
        shown = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(local)
    except OverflowError:  # past year 9999 (or before year 1) in the recipient's zone
        raise TemplateRenderError(f"{value!r} is out of range in time zone {local}") from None
    return shown.strftime(fmt)


def _http_url(value: object) -> str | None:
    """The URL if it is http(s), else None, so job data can never produce a `javascript:` link."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value.strip())
    return value.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else None


class _MissingMessage(str):
    """Jinja's undefined message, carrying what was looked up so the error can name a full path."""

    obj: object
    name: object


class _NamedUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose error remembers the object and key it failed on."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        message = _MissingMessage(super()._undefined_message)
        message.obj, message.name = self._undefined_obj, self._undefined_name
        return message


def _missing_path(exc: jinja2.UndefinedError, ctx: Mapping[str, Any]) -> str:
    """'content.items[1].occurred_at' for a failed lookup, found by locating its parent in ctx."""
    message = exc.args[0] if exc.args else None
    if not isinstance(message, _MissingMessage):
        return str(exc)
    if message.obj is missing:  # a top-level variable
        return str(message.name)
    parent = next(filter(None, (_find(v, message.obj, k, 5) for k, v in ctx.items())), None)
    if parent is None:  # looked up on something computed in the template: Jinja's words will do
        return str(message)
    if isinstance(message.name, str):
        return f"{parent}.{message.name}"
    return f"{parent}[{message.name!r}]"


def _find(node: object, target: object, path: str, depth: int) -> str | None:
    if node is target:
        return path
    if isinstance(node, Mapping) and depth:
        children = [(f"{path}.{k}", v) for k, v in node.items()]
    elif isinstance(node, list) and depth:
        children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
    else:
        return None
    return next(filter(None, (_find(v, target, p, depth - 1) for p, v in children)), None)

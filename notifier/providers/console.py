"""A development provider: prints each message and can keep it in an outbox folder.

It lets the whole pipeline run without SendGrid or Twilio accounts. With `outbox_dir` set, an
email becomes `<job_id>.eml` (open it in any mail client) and an SMS/WhatsApp message
`<job_id>.txt`; files appear atomically (temp file + rename), so a watcher never reads half.

Simulated failures, for demos of the failure paths (the `.invalid` TLD can never be real):
- a recipient ending in `@fail.invalid` (e.g. `bounce@fail.invalid`, or a phone written as
  `+15550000000@fail.invalid`) is rejected with `PermanentDeliveryError` ("address rejected");
- a recipient ending in `@retry.invalid` fails with `TransientDeliveryError`, so retries and
  back-off can be watched until the job runs out of attempts.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from email.message import EmailMessage as MimeMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from typing import TextIO

from notifier.errors import PermanentDeliveryError, TransientDeliveryError
from notifier.providers.base import EmailMessage, Message, ProviderReceipt, TextMessage

FAIL_DOMAIN = "@fail.invalid"
RETRY_DOMAIN = "@retry.invalid"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
_RULE = "-" * 60


class ConsoleProvider:
    """Prints messages (and writes them to `outbox_dir`) instead of sending them."""

    name = "console"
    guarded_by_breaker = False  # nothing remote to protect, nothing to wait for

    def __init__(
        self,
        outbox_dir: Path | None = None,
        stream: TextIO | None = None,
        *,
        from_email: str = "notifier@localhost",
    ) -> None:
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else None
        self._stream = stream
        self.from_email = from_email
        if self.outbox_dir is not None:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)

    def send(self, message: Message) -> ProviderReceipt:
        simulate_failure(message.to)
        path: Path | None = None
        if isinstance(message, EmailMessage):
            block = _email_block(message)
            if self.outbox_dir is not None:
                try:
                    data = to_mime(message, self.from_email).as_bytes()
                except ValueError as exc:  # e.g. a header value with a line break in it
                    raise PermanentDeliveryError(
                        f"The email could not be written as MIME: {exc}"
                    ) from None
                path = _write_atomically(self.outbox_dir, f"{_safe(message.job_id)}.eml", data)
        else:
            block = _text_block(message)
            if self.outbox_dir is not None:
                text = f"To: {message.to}\nChannel: {message.channel}\n\n{message.body}\n"
                name = f"{_safe(message.job_id)}.txt"
                path = _write_atomically(self.outbox_dir, name, text.encode("utf-8"))
        stream = self._stream if self._stream is not None else sys.stdout  # read late: capture
        stream.write(block)
        stream.flush()
        response = {"path": str(path)} if path is not None else {}
        return ProviderReceipt(self.name, f"console-{message.job_id}", response)


def simulate_failure(recipient: str) -> None:
    """Raise the failure a demo address asks for (see the module docstring)."""
    address = recipient.strip().lower()
    if address.endswith(FAIL_DOMAIN):
        raise PermanentDeliveryError(
            f"The console provider rejected the address (simulated): recipients ending in "
            f"{FAIL_DOMAIN} always fail",
            code="simulated",
        )
    if address.endswith(RETRY_DOMAIN):
        raise TransientDeliveryError(
            f"The console provider is temporarily unavailable (simulated): recipients ending "
            f"in {RETRY_DOMAIN} always fail and are retried",
            code="simulated",
        )


def to_mime(message: EmailMessage, from_email: str) -> MimeMessage:
    """The message as a multipart/alternative email, as a mail client would receive it."""
    mime = MimeMessage()
    mime["From"] = from_email
    mime["To"] = formataddr((message.to_name or "", message.to))
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(localtime=True)
    mime["Message-ID"] = make_msgid(domain="notifier.localhost")
    mime["X-Notifier-Job-Id"] = str(message.job_id)
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


def _email_block(message: EmailMessage) -> str:
    lines = [
        f"{_RULE}\nemail  job {message.job_id}",
        f"To:      {formataddr((message.to_name or '', message.to))}",
        f"Subject: {message.subject}",
        *(f"{name}: {value}" for name, value in message.headers.items()),
        "",
        message.text.rstrip(),
        f"{_RULE}\n",
    ]
    return "\n".join(lines)


def _text_block(message: TextMessage) -> str:
    return (
        f"{_RULE}\n{message.channel}  job {message.job_id}\nTo: {message.to}\n\n"
        f"{message.body.rstrip()}\n{_RULE}\n"
    )


def _safe(job_id: str) -> str:
    """A job id as a file name that cannot leave the outbox (no `/`, no `..`)."""
    cleaned = _UNSAFE_FILENAME.sub("_", str(job_id)).lstrip(".")
    return cleaned or "job"


def _write_atomically(directory: Path, name: str, data: bytes) -> Path:
    target = directory / name
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)  # no fsync: the rename is for readers, not for crash safety
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target

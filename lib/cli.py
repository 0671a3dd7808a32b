"""Stage entry point: logging set-up, secret redaction and one clear error line."""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

from lib.errors import PipelineError

log = logging.getLogger("pipeline")
_SECRETS: set[str] = set()
_PATTERN: re.Pattern[str] | None = None


def encodings(secret: str) -> set[str]:
    """The forms a secret takes on its way into a message: as is, URL-encoded (query string and
    path, `+` or `%20` for a space), JSON- and HTML-escaped, base64 (standard and URL-safe)."""
    raw = secret.encode()
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        html.escape(secret),
        repr(secret)[1:-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
    }
    return {f for f in forms if f}


def register_secret(value: str) -> None:
    """Remember a secret so that no log line or error message ever prints it, in any encoding."""
    global _PATTERN
    if value:
        _SECRETS.update(encodings(value))
        # Longest first (a longer form may contain a shorter one); percent-escapes in either case.
        parts = [
            re.sub(r"%[0-9A-Fa-f]{2}", lambda m: f"(?i:{re.escape(m.group())})", re.escape(s))
            for s in sorted(_SECRETS, key=len, reverse=True)
        ]
        _PATTERN = re.compile("|".join(parts))


def redact(text: str) -> str:
    return _PATTERN.sub("***", text) if _PATTERN is not None else text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def setup_logging() -> None:
    """INFO to stderr, WARNING only under CI (`CI` set) or with PIPELINE_QUIET=1."""
    quiet = bool(os.environ.get("CI")) or os.environ.get("PIPELINE_QUIET") == "1"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def path_args(argv: list[str], description: str | None, *names: str) -> argparse.Namespace:
    """Parse the stage's required `--name PATH` options (paths live in dvc.yaml, not in params)."""
    ap = argparse.ArgumentParser(description=description)
    for name in names:
        ap.add_argument(f"--{name}", type=Path, required=True)
    return ap.parse_args(argv)


def run_stage(name: str, main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's `main`; a PipelineError becomes `error: <message>` and exit code 1."""
    setup_logging()
    try:
        main(sys.argv[1:] if argv is None else argv)
    except PipelineError as exc:
        print(f"error [{name}]: {redact(str(exc))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error [{name}]: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:  # noqa: BLE001 - a bug, not a user error: keep the traceback, never a secret
        print(redact(traceback.format_exc()), file=sys.stderr)
        print(f"error [{name}]: unexpected failure (traceback above)", file=sys.stderr)
        sys.exit(1)

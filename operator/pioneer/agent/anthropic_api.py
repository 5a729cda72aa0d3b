"""What every Claude call of the agent shares: the client (key, gateway, timeout) and untrusted text quoted as data."""

from __future__ import annotations

import json
import os
from typing import Any

KEY_ENV = "ANTHROPIC_API_KEY"
URL_ENV = "ANTHROPIC_BASE_URL"


def client(api_key: str, base_url: str | None, timeout: float, max_retries: int):
    """An ``anthropic.Anthropic`` for ``base_url`` (else ANTHROPIC_BASE_URL, else Anthropic's API)."""
    import anthropic

    return anthropic.Anthropic(api_key=api_key, base_url=base_url or os.environ.get(URL_ENV) or None, timeout=timeout,
                               max_retries=max_retries)


def quoted(data: Any) -> str:
    """JSON inside <untrusted-data> delimiters that no quoted text can close ('<' is escaped)."""
    return "<untrusted-data>\n" + json.dumps(data, indent=1, default=str).replace("<", "\\u003c") + "\n</untrusted-data>"

"""Print the current TOTP code of each demo staff account (from var/demo-credentials.json).

The demo's stand-in for an authenticator app; real staff scan their otpauth:// URI instead.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from django_otp.oath import totp

CREDENTIALS = Path(__file__).resolve().parent.parent / "var" / "demo-credentials.json"


def current_code(uri: str) -> str:
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    return f"{totp(base64.b32decode(secret)):06d}"


def main() -> None:
    staff = json.loads(CREDENTIALS.read_text())["staff"]
    wanted = sys.argv[1:] or list(staff)
    remaining = 30 - int(time.time()) % 30
    for username in wanted:
        print(f"{username:<11} {current_code(staff[username]['totp_uri'])}")
    print(f"(valid for about {remaining} more seconds)")


if __name__ == "__main__":
    main()

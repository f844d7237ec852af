"""The API-key rules: a key comes only from the environment variable a recipe names (never
from a file, never echoed), and a keyless loopback server needs none."""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

from orchestrator.core.common.errors import UserError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_loopback(base_url: str) -> bool:
    """True for 127.0.0.0/8, ::1, localhost (and 0.0.0.0, which reaches this host too)."""
    host = (urlsplit(base_url if "://" in base_url else f"http://{base_url}").hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


ENV_NAME_RULE = "must be the NAME of an environment variable holding the key (e.g. DEEPSEEK_API_KEY), not the key itself"


def is_env_name(text: object) -> bool:
    """A plausible environment variable name (not, say, a key pasted in its place)."""
    return isinstance(text, str) and bool(_ENV_NAME.fullmatch(text))


def check_env_name(env_name: str | None, what: str = "api_key_env") -> None:
    """Refuse a value that is not a variable name, without echoing it: it may be a key pasted
    where the variable's name belongs."""
    if env_name is not None and not is_env_name(env_name):
        raise UserError(f"{what} {ENV_NAME_RULE}")


def resolve_api_key(env_name: str | None, base_url: str) -> str:
    """The API key from the environment variable named env_name; "EMPTY" for a keyless loopback."""
    check_env_name(env_name)
    value = (os.environ.get(env_name) or "").strip() if env_name else ""
    if value:
        return value
    if is_loopback(base_url):
        return "EMPTY"
    if env_name is None:
        raise UserError(
            f"the endpoint {base_url} needs an API key: set api_key_env to the name of the environment "
            "variable that holds it"
        )
    raise UserError(f"{env_name} is not set: the endpoint {base_url} needs an API key; export {env_name}=...")

"""Keep secrets out of what trainflow shows: logs, errors, MLflow params and Prefect artifacts.

A value is treated as secret when its name looks like one (password, token, key, ...), or when it
is the password of a URI (`s3://KEY:SECRET@bucket/...`, `postgresql://user:pw@host/db`) or a URI
query parameter with such a name (`?sig=...&token=...`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from trainflow.errors import ConfigError

MASK = "***"
SECRET_WORDS = frozenset({"password", "passwd", "pwd", "token", "secret", "key", "apikey", "credential",
                          "credentials", "sig", "signature", "auth", "authorization"})
# Run-together names: accesskey, secretkey, apitoken, clientsecret, dbpassword, sastoken, ...
_SECRET_PARTS = ("password", "passwd", "secret", "credential", "apikey", "accesskey", "privatekey",
                 "apitoken", "authtoken", "accesstoken", "refreshtoken", "sastoken")

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
# The password runs to the last "@" of the URI: unencoded secrets may hold "/" or "@" (AWS keys do).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/@:'\"]*:)[^\s'\"]+@")
_QUERY = re.compile(r"(?P<head>[?&](?P<name>[^=&#\s'\"]+)=)[^&#\s'\"]*")


def is_secret_name(name: str) -> bool:
    """True for names such as `password`, `api_token`, `aws.secret_access_key`, `apiKey`."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))  # apiKey -> api_Key
    words = re.split(r"[^a-z0-9]+", spaced.lower())
    return bool(set(words) & SECRET_WORDS) or any(part in word for word in words for part in _SECRET_PARTS)


def mask_text(text: str) -> str:
    """`text` with every URI password and secret-named query value replaced by ***."""
    text = _USERINFO.sub(lambda m: m.group("head") + MASK + "@", str(text))
    return _QUERY.sub(lambda m: m.group("head") + MASK if is_secret_name(m.group("name")) else m.group(0),
                      text)


def flatten_masked(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys and values strings; secret names are masked, URIs cleaned."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_masked(v, f"{key}."))
        else:
            out[key] = MASK if is_secret_name(key) else mask_text(str(v))
    return out


def resolve_env(value: Any, where: str) -> Any:
    """`value` with each `${env:NAME}` replaced by the environment variable NAME.

    Specs refer to credentials this way, so the spec (which Prefect stores and shows as the flow
    run's parameters) holds only the reference; it is resolved where the data is opened, in the
    process that runs the flow.
    """
    if not isinstance(value, str) or "${env:" not in value:
        return value

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if not os.environ.get(name):
            state = "is empty" if name in os.environ else "is not set"
            raise ConfigError(f"{where}: environment variable {name} {state} (the spec refers to it as "
                              f"${{env:{name}}}). Set it where the flow runs (the Prefect worker's or "
                              "`trainflow run`'s environment), or write the value into the spec.")
        return os.environ[name]

    resolved = _ENV_REF.sub(lookup, value)
    if "${env:" in _ENV_REF.sub("", value):
        raise ConfigError(f"{where}: malformed reference in {mask_text(value)!r}; write ${{env:NAME}} with NAME "
                          "made of letters, digits and underscores.")
    return resolved

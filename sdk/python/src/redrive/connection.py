"""A redis-py client for the fleet's Redis with the settings of redrive's ``[redis]`` section:
``rediss://`` URLs with a CA file, a client certificate and key (mutual TLS), ``insecure`` only
when asked for, and the ACL user and password from the URL, a file or an environment variable.

:func:`connect` builds a ``redis.Redis`` (:func:`connect_async` a ``redis.asyncio.Redis``) to
hand to :class:`~redrive.Producer` or :class:`~redrive.TaskReader`; :func:`options_from_env`
reads the same ``REDRIVE_REDIS__*`` variables a member reads (``REDRIVE_REDIS__TLS_CA_FILE``,
``REDRIVE_REDIS__TLS_CERT_FILE``, ``REDRIVE_REDIS__TLS_KEY_FILE``,
``REDRIVE_REDIS__TLS_INSECURE``, ``REDRIVE_REDIS__USERNAME``, ``REDRIVE_REDIS__PASSWORD_FILE``,
``REDRIVE_REDIS__PASSWORD_ENV``). Errors name the setting, never a password.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio

__all__ = ["connect", "connect_async", "options_from_env"]


def _is_tls(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ("rediss", "valkeys")


def _password(password_file: str | None, password_env: str | None) -> str | None:
    if password_file and password_env:
        raise ValueError(
            "password_file and password_env are both set: read the password from one of them"
        )
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(
                f"password_file = {password_file!r} cannot be read: {e.strerror}"
            ) from None
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
        where = f"password_file = {password_file!r}"
    elif password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise ValueError(f"password_env = {password_env!r} names a variable that is not set")
        text, where = value, f"password_env = {password_env!r}"
    else:
        return None
    if not text or "\n" in text or "\r" in text:
        raise ValueError(f"{where}: the password is empty or spans several lines")
    return text


def _kwargs(  # noqa: PLR0917 (connect's keyword arguments, passed on in order)
    url: str,
    tls_ca_file: str | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    tls_insecure: bool,
    username: str | None,
    password_file: str | None,
    password_env: str | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    tls_set = bool(tls_ca_file or tls_cert_file or tls_key_file or tls_insecure)
    if not _is_tls(url):
        if tls_set:
            raise ValueError(
                "TLS settings are set but the URL is not a rediss:// URL: use rediss:// to "
                "connect with TLS, or clear them"
            )
    else:
        if url.rstrip("/").endswith("#insecure"):
            raise ValueError("remove #insecure from the URL: tls_insecure is the one switch")
        if tls_insecure and tls_ca_file:
            raise ValueError("tls_insecure skips the check tls_ca_file is for: set one of them")
        if bool(tls_cert_file) != bool(tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        for setting, path in (
            ("tls_ca_file", tls_ca_file),
            ("tls_cert_file", tls_cert_file),
            ("tls_key_file", tls_key_file),
        ):
            if path and not os.path.isfile(path):
                raise ValueError(f"{setting} = {path!r} is not a readable file")
        if tls_ca_file:
            kwargs["ssl_ca_certs"] = tls_ca_file
        if tls_cert_file:
            kwargs["ssl_certfile"] = tls_cert_file
            kwargs["ssl_keyfile"] = tls_key_file
        if tls_insecure:
            kwargs["ssl_cert_reqs"] = "none"
            kwargs["ssl_check_hostname"] = False
            logging.getLogger("redrive").warning(
                "INSECURE: tls_insecure is on, so the Redis server's TLS certificate is NOT "
                "verified: anyone on the network path can read and change every task"
            )
    parsed = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if username:
        if parsed.get("username") and parsed["username"] != username:
            raise ValueError("username and the user in the URL differ: set the user in one place")
        kwargs["username"] = username
    password = _password(password_file, password_env)
    if password is not None:
        if parsed.get("password"):
            raise ValueError(
                "the URL carries a password and password_file or password_env gives another: "
                "set the password in one place"
            )
        kwargs["password"] = password
    return kwargs


def connect(
    url: str,
    *,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    tls_insecure: bool = False,
    username: str | None = None,
    password_file: str | None = None,
    password_env: str | None = None,
    **redis_options: Any,
) -> redis.Redis:
    """A ``redis.Redis`` for ``url`` with redrive's ``[redis]`` settings (``tls_ca_file``: the
    PEM of the authority that signed the server's certificate, else the system's roots;
    ``tls_cert_file`` and ``tls_key_file``: mutual TLS; ``tls_insecure``: no certificate check;
    ``username``; the password from ``password_file`` or the variable ``password_env``).
    ``redis_options`` go to ``redis.Redis.from_url``. Raises ``ValueError`` for settings that
    contradict each other or name missing files."""
    kwargs = _kwargs(
        url,
        tls_ca_file,
        tls_cert_file,
        tls_key_file,
        tls_insecure,
        username,
        password_file,
        password_env,
    )
    return redis.Redis.from_url(url, **kwargs, **redis_options)


def connect_async(
    url: str,
    *,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    tls_insecure: bool = False,
    username: str | None = None,
    password_file: str | None = None,
    password_env: str | None = None,
    **redis_options: Any,
) -> redis.asyncio.Redis:
    """:func:`connect` for ``redis.asyncio``."""
    kwargs = _kwargs(
        url,
        tls_ca_file,
        tls_cert_file,
        tls_key_file,
        tls_insecure,
        username,
        password_file,
        password_env,
    )
    return redis.asyncio.Redis.from_url(url, **kwargs, **redis_options)


def options_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`connect` from the ``REDRIVE_REDIS__*`` variables a
    member reads (unset or empty ones left out)."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    for name in (
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "username",
        "password_file",
        "password_env",
    ):
        value = env.get(f"REDRIVE_REDIS__{name.upper()}", "").strip()
        if value:
            out[name] = value
    insecure = env.get("REDRIVE_REDIS__TLS_INSECURE", "").strip().lower()
    if insecure in ("1", "true", "yes"):
        out["tls_insecure"] = True
    return out

"""Redis over TLS from the Python SDK: a real redis-server listening with TLS only, certificates
made in the test with the openssl command. ``redrive.connect`` with a CA file and a client
certificate publishes and reads tasks (``wait`` included, on its own connections); a missing
client certificate or the wrong authority is refused; the CLI takes the same settings from the
``REDRIVE_REDIS__*`` variables a member reads; a password from a file works and is never shown;
``tls_insecure`` warns."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from redrive import Producer, WaitTimeout, connect
from redrive.connection import options_from_env

from .conftest import free_port

PASSWORD = "py-tls-acl-Secret-93"  # noqa: S105 (the test server's ACL password)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def authority(dir: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=dir,
    )  # fmt: skip


def leaf(dir: Path, ca: str, name: str, ext: str) -> None:
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=dir,
    )  # fmt: skip
    (dir / f"{name}.ext").write_text(ext)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=dir,
    )  # fmt: skip


@dataclass
class TlsRedis:
    """A TLS-only redis-server with mutual TLS and an ACL user ``app``."""

    url: str
    dir: Path

    def pem(self, name: str) -> str:
        return str(self.dir / f"{name}.pem")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}-key.pem")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: the TLS tests need a real Redis")
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: the TLS tests make their certificates with it")
    dir = tmp_path_factory.mktemp("tls")
    authority(dir, "ca")
    authority(dir, "other-ca")
    leaf(
        dir,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    leaf(dir, "ca", "client", "extendedKeyUsage=clientAuth\n")
    port = free_port()
    log = dir / "redis.log"
    proc = subprocess.Popen(
        [
            exe,
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(dir / "server.pem")),
            *("--tls-key-file", str(dir / "server-key.pem")),
            *("--tls-ca-cert-file", str(dir / "ca.pem"), "--tls-auth-clients", "yes"),
            *("--user", "app", "on", f">{PASSWORD}", "~*", "&*", "+@all"),
            *("--user", "default", "off"),
            *("--save", "", "--appendonly", "no", "--logfile", str(log)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "Ready to accept connections" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, f"redis-server exited: {log.read_text()}"
            assert time.monotonic() < deadline, "redis-server (TLS) did not start in 10 s"
            time.sleep(0.02)
        (dir / "password").write_text(PASSWORD + "\n")
        yield TlsRedis(f"rediss://127.0.0.1:{port}/0", dir)
    finally:
        proc.kill()
        proc.wait(5)


def client(srv: TlsRedis, **over: object) -> redis.Redis:
    opts: dict[str, object] = {
        "tls_ca_file": srv.pem("ca"),
        "tls_cert_file": srv.pem("client"),
        "tls_key_file": srv.key("client"),
        "username": "app",
        "password_file": str(srv.dir / "password"),
        "socket_connect_timeout": 5,
        "socket_timeout": 5,
    }
    opts.update(over)
    return connect(srv.url, **opts)  # type: ignore[arg-type]


def test_mutual_tls_publishes_and_reads_tasks(tls_redis: TlsRedis) -> None:
    r = client(tls_redis)
    producer = Producer(r, key_prefix="pytls")
    got = producer.enqueue("acme", "triage", {"n": 1}, task_id="tls-1")
    assert got.task_id == "tls-1"
    record = producer.get_task("acme", "tls-1")
    assert record is not None
    assert record.state is not None
    assert record.state.value == "queued"
    # wait's own connections (made from the client's settings) speak TLS too.
    with pytest.raises(WaitTimeout):
        producer.wait("acme", "tls-1", 0.3)
    producer.close()
    assert r.xlen("pytls:{acme}:lane") == 1


def test_a_missing_client_certificate_or_a_wrong_ca_is_refused(tls_redis: TlsRedis) -> None:
    for over in (
        {"tls_cert_file": None, "tls_key_file": None},
        {"tls_ca_file": tls_redis.pem("other-ca")},
    ):
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError) as e:
            client(tls_redis, **over).ping()
        assert time.monotonic() - started < 10
        assert PASSWORD not in str(e.value)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client(tls_redis, tls_ca_file=tls_redis.pem("other-ca")).ping()


def test_settings_that_contradict_each_other_are_refused(tls_redis: TlsRedis) -> None:
    plain = tls_redis.url.replace("rediss://", "redis://")
    with pytest.raises(ValueError, match="not a rediss:// URL"):
        connect(plain, tls_ca_file=tls_redis.pem("ca"))
    with pytest.raises(ValueError, match="go together"):
        connect(tls_redis.url, tls_cert_file=tls_redis.pem("client"))
    with pytest.raises(ValueError, match="one place") as e:
        connect(
            tls_redis.url.replace("rediss://", f"rediss://app:{PASSWORD}@"),
            password_file=str(tls_redis.dir / "password"),
        )
    assert PASSWORD not in str(e.value)
    with pytest.raises(ValueError, match="not set"):
        connect(tls_redis.url, password_env="REDRIVE_TEST_UNSET_VAR")  # noqa: S106


def test_insecure_connects_without_a_ca_and_warns(
    tls_redis: TlsRedis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="redrive"):
        r = client(tls_redis, tls_ca_file=None, tls_insecure=True)
    assert "INSECURE" in caplog.text
    assert r.ping()


def test_the_cli_reads_the_members_variables(tls_redis: TlsRedis) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REDRIVE_REDIS_URL": tls_redis.url,
        "REDRIVE_REDIS__KEY_PREFIX": "pytls-cli",
        "REDRIVE_REDIS__TLS_CA_FILE": tls_redis.pem("ca"),
        "REDRIVE_REDIS__TLS_CERT_FILE": tls_redis.pem("client"),
        "REDRIVE_REDIS__TLS_KEY_FILE": tls_redis.key("client"),
        "REDRIVE_REDIS__USERNAME": "app",
        "REDRIVE_REDIS__PASSWORD_ENV": "APP_PW",
        "APP_PW": PASSWORD,
    }
    assert options_from_env(env)["password_env"] == "APP_PW"  # noqa: S105
    out = subprocess.run(
        [sys.executable, "-m", "redrive", "enqueue", "acme", "k", "{}", "--task-id", "cli-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "cli-1" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr
    r = client(tls_redis)
    assert r.xlen("pytls-cli:{acme}:lane") == 1

"""Configuration files: every member read, every mistake refused with a message."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from nitrotls.kms.local import (
    DEV_CREDENTIAL,
    ConfigError,
    ServerConfig,
    load_config,
    parse_listen,
)

FULL = """
listen = "0.0.0.0:9999"
region = "eu-central-1"
data_dir = "state"
audit_log = "/var/log/kms-audit.log"
trust_dev_root = true
audit_fsync = true
max_request_bytes = 4096
max_connections = 8
request_timeout_seconds = 5
recipient_max_age_seconds = 60

[[credentials]]
access_key = "AKIDADMIN"
secret = "admin-secret"
principal = "arn:aws:iam::111122223333:role/admin"

[[credentials]]
access_key = "AKIDENCLAVE"
secret_env = "ENCLAVE_SECRET"
principal = "arn:aws:sts::111122223333:assumed-role/enclave/i-0"
"""


def write(tmp_path: Path, text: str, name: str = "kms.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_full_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_SECRET", "from-env")
    config = load_config(write(tmp_path, FULL))
    assert (config.host, config.port, config.region) == ("0.0.0.0", 9999, "eu-central-1")
    assert config.data_dir == (tmp_path / "state").resolve()
    assert config.audit_log == Path("/var/log/kms-audit.log")
    assert config.trust_dev_root and config.audit_fsync
    assert (config.max_request_bytes, config.max_connections) == (4096, 8)
    assert config.request_timeout == 5.0
    assert config.recipient_max_age == timedelta(seconds=60)
    creds = config.credential_map()
    assert creds["AKIDADMIN"].secret == "admin-secret"
    assert creds["AKIDENCLAVE"].secret == "from-env"
    assert creds["AKIDENCLAVE"].account == "111122223333"
    assert not config.uses_dev_credential


def test_json_and_defaults(tmp_path: Path, nitrotls_home: Path) -> None:
    config = load_config(write(tmp_path, json.dumps({"region": "us-west-2"}), "kms.json"))
    assert config.region == "us-west-2"
    assert config.uses_dev_credential
    assert config.credential_map() == {DEV_CREDENTIAL.access_key: DEV_CREDENTIAL}
    assert config.resolved_data_dir() == nitrotls_home / "kms"
    assert config.resolved_audit_log() == nitrotls_home / "kms" / "audit.log"
    assert ServerConfig().port == 7800


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lisen = '1.2.3.4:5'", "unknown settings"),
        ("listen = 'nowhere'", "HOST:PORT"),
        ("region = 'mars'", "region"),
        ("max_connections = 0", "positive"),
        ("max_connections = true", "must be a int"),
        ("trust_dev_root = 'yes'", "must be a bool"),
        ("[[credentials]]\naccess_key='a'\nsecret='s'\nprincipal='bob'", "IAM or STS ARN"),
        (
            "[[credentials]]\naccess_key='a'\nprincipal='arn:aws:iam::111122223333:root'",
            "exactly one of secret",
        ),
        (
            "[[credentials]]\naccess_key='a'\nsecret_env='NITROTLS_UNSET_VAR'\n"
            "principal='arn:aws:iam::111122223333:root'",
            "not set",
        ),
        (
            "[[credentials]]\naccess_key='a'\nsecret='s'\nprincipal='arn:aws:iam::111122223333:root'"
            "\n[[credentials]]\naccess_key='a'\nsecret='t'\n"
            "principal='arn:aws:iam::111122223333:root'",
            "unique",
        ),
        (
            "[[credentials]]\naccess_key='a'\nsecret='s'\nrole='x'\n"
            "principal='arn:aws:iam::111122223333:root'",
            "unknown members",
        ),
        ("this is not toml =", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_secret_in_a_readable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(
            write(
                tmp_path, FULL.split('[[credentials]]\naccess_key = "AKIDENCLAVE"')[0], mode=0o644
            )
        )


def test_listen_forms() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:7800") == ("::1", 7800)
    for bad in ("127.0.0.1", ":80", "host:99999", "host:http"):
        with pytest.raises(ConfigError):
            parse_listen(bad)

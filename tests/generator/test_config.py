"""nitrotls.toml: typed sections, unknown keys refused, overrides re-validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from nitrotls import config
from nitrotls.config import CASection, Config, ConfigError, GeneratorSection, override

EXAMPLE = """
[generator]
domains = ["example.test", "www.example.test"]
key-type = "p384"
main_pcrs = ["pcrs/main.json"]
renew_fraction = 0.5
lease_ttl = 30

[kms]
endpoint = "http://127.0.0.1:4000"
key_id = "alias/nitrotls"

[store]
spec = "s3://bucket/prefix?endpoint_url=http://127.0.0.1:5000"

[ca]
server = "acme:https://127.0.0.1:14000/dir"
ca_bundle = "/etc/pebble/root.pem"
contact = ["mailto:ops@example.test"]
challenge = "dns-01"
dns_hook = "/usr/local/bin/dns-hook"
"""


def test_example_parses_into_typed_sections(tmp_path: Path) -> None:
    path = tmp_path / "nitrotls.toml"
    path.write_text(EXAMPLE)
    loaded = config.load(path)
    assert loaded.path == path
    gen = loaded.generator
    assert gen.domains == ("example.test", "www.example.test")
    assert gen.key_type == "p384"
    assert gen.main_pcrs == (tmp_path / "pcrs" / "main.json",)  # relative to the file
    assert gen.renew_fraction == 0.5
    assert gen.lease_ttl == 30.0 and isinstance(gen.lease_ttl, float)
    assert gen.bundle_name == "example.test"
    assert loaded.kms.key_id == "alias/nitrotls"
    assert loaded.kms.region == "us-east-1"
    assert loaded.store.spec is not None and loaded.store.spec.startswith("s3://")
    assert loaded.ca.directory_url == "https://127.0.0.1:14000/dir"
    assert not loaded.ca.is_local
    assert loaded.ca.ca_bundle == Path("/etc/pebble/root.pem")
    assert loaded.ca.contact == ("mailto:ops@example.test",)


def test_no_file_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    assert config.load(None) == Config()
    assert Config().generator.key_type == "p256"
    assert Config().ca.is_local


def test_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.toml"
    path.write_text('[generator]\ndomains = ["a.test"]\n')
    monkeypatch.setenv(config.CONFIG_ENV, str(path))
    assert config.load().generator.domains == ("a.test",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[generatr]\n", "unknown section"),
        ("generator = 1\n", "must be a"),
        ("[generator]\ndomain = ['a']\n", "unknown key 'domain'"),
        ("[generator]\ndomains = 'a.test'\n", "a list of text"),
        ("[generator]\ndomains = [1]\n", "a list of text"),
        ("[generator]\nkey_type = 'ed25519'\n", "key_type must be one of"),
        ("[generator]\nrenew_fraction = 1.5\n", "renew_fraction"),
        ("[generator]\nrenew_fraction = 0.9\nrenew_jitter = 0.2\n", "renew_jitter"),
        ("[generator]\nlease_ttl = 0\n", "lease_ttl must be positive"),
        ("[generator]\nlease_ttl = true\n", "must be a number"),
        ("[generator]\nretry_attempts = 1.5\n", "an integer"),
        ("[generator]\nlog_json = 'yes'\n", "true/false"),
        ("[generator]\nkey_type = 'p256'\nkey-type = 'p384'\n", "gives key_type twice"),
        ("[kms]\nkey-id = 'a'\nkey_id = 'b'\n", "gives key_id twice, as 'key-id' and 'key_id'"),
        ("[ca]\nserver = 'letsencrypt'\n", "'local' or 'acme:"),
        ("[ca]\nserver = 'acme:ftp://x'\n", "http"),
        ("[ca]\nchallenge = 'tls-alpn-01'\n", "challenge"),
        ("[ca]\nserver = 'acme:https://x/d'\nchallenge = 'dns-01'\n", "dns_hook"),
        ("[ca]\neab_hmac = 'k'\n", "needs eab_kid"),
        ("[kms]\nkey_id = 5\n", "text"),
        ("not toml [\n", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(text)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")


def test_overrides_replace_only_given_values_and_revalidate() -> None:
    base = GeneratorSection(domains=("a.test",), key_type="p384")
    changed = override(base, key_type=None, domains=("b.test", "c.test"), lease_ttl=5)
    assert changed.domains == ("b.test", "c.test")
    assert changed.key_type == "p384"
    assert changed.lease_ttl == 5.0
    assert override(base, domains=()).domains == ("a.test",)
    with pytest.raises(ConfigError, match="key_type"):
        override(base, key_type="dsa")
    with pytest.raises(ConfigError, match="server"):
        override(CASection(), server="nope")


def test_bundle_name_defaults_to_the_first_domain_without_wildcard() -> None:
    assert GeneratorSection(domains=("*.example.test",)).bundle_name == "example.test"
    assert GeneratorSection(bundle="web", domains=("a.test",)).bundle_name == "web"
    assert GeneratorSection().bundle_name is None


def test_to_table_round_trips_through_toml_values(tmp_path: Path) -> None:
    path = tmp_path / "nitrotls.toml"
    path.write_text(EXAMPLE)
    table = config.load(path).generator.to_table()
    assert table["main_pcrs"] == [str(tmp_path / "pcrs" / "main.json")]
    assert GeneratorSection.from_table(table) == config.load(path).generator


def test_a_role_section_is_loaded_from_its_package() -> None:
    loaded = config.parse('[server]\nbundle = "web"\n\n[generator]\ndomains = ["a.test"]\n')
    server = loaded.server
    assert type(server).__name__ == "ServerSection"
    assert isinstance(server, config.Section)
    assert getattr(server, "bundle") == "web"  # noqa: B009 - a role's own field
    assert loaded.generator.domains == ("a.test",)
    with pytest.raises(AttributeError):
        _ = Config().server
    with pytest.raises(ConfigError, match="server"):
        config.parse("[server]\nno_such_key = 1\n")

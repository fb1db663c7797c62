"""The HTTP layer: wire format, limits, concurrency, clean stop, and the dev-credential helper."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from nitrotls.kms.local import (
    DEV_ACCESS_KEY,
    DEV_PRINCIPAL,
    DEV_SECRET,
    Credential,
    LocalKMSServer,
    running_server,
    verify_log,
)


def raw_call(
    kit: Any,
    endpoint: str,
    target: str,
    body: bytes,
    credential: Credential,
    content_type: str = "application/x-amz-json-1.1",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A SigV4-signed request built by hand, for inputs boto3 would never send."""
    headers = kit.sign(endpoint, target, body, credential, content_type)
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def test_wire_format_of_answers(kit: Any, local_kms: LocalKMSServer) -> None:
    status, body, headers = raw_call(
        kit, local_kms.endpoint_url, "TrentService.ListKeys", b"{}", kit.admin
    )
    assert status == 200 and body == {"Keys": [], "Truncated": False}
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-RequestId"]
    status, body, _ = raw_call(kit, local_kms.endpoint_url, "TrentService.ListKeys", b"", kit.admin)
    assert status == 200  # an empty body is an empty request


@pytest.mark.parametrize(
    ("target", "body", "content_type", "code"),
    [
        ("TrentService.Frobnicate", b"{}", None, "UnknownOperationException"),
        ("OtherService.ListKeys", b"{}", None, "UnknownOperationException"),
        ("TrentService.ListKeys", b"{not json", None, "SerializationException"),
        ("TrentService.ListKeys", b"[1, 2]", None, "SerializationException"),
        ("TrentService.ListKeys", b"{}", "text/plain", "ValidationException"),
        ("TrentService.ListKeys", b'{"Limit": 0}', None, "ValidationException"),
        ("TrentService.ListKeys", b'{"Limit": "ten"}', None, "ValidationException"),
        ("TrentService.ListKeys", b'{"Marker": "zzz"}', None, "InvalidMarkerException"),
        ("TrentService.DescribeKey", b"{}", None, "ValidationException"),
        ("TrentService.Decrypt", b'{"CiphertextBlob": "***"}', None, "ValidationException"),
        ("TrentService.GenerateRandom", b'{"NumberOfBytes": 1025}', None, "ValidationException"),
        ("TrentService.GenerateRandom", b"{}", None, "ValidationException"),
        (
            "TrentService.Encrypt",
            b'{"KeyId": "x", "Plaintext": "' + b"QUFB" * 1400 + b'"}',
            None,
            "ValidationException",
        ),
        (
            "TrentService.GenerateRandom",
            b'{"NumberOfBytes": 8, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1", '
            b'"AttestationDocument": "AAAA"}}',
            None,
            "ValidationException",
        ),
        (
            "TrentService.GenerateRandom",
            b'{"NumberOfBytes": 8, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", '
            b'"AttestationDocument": "AAAA"}}',
            None,
            "ValidationException",
        ),
    ],
)
def test_bad_requests_get_aws_errors(
    kit: Any,
    local_kms: LocalKMSServer,
    target: str,
    body: bytes,
    content_type: str | None,
    code: str,
) -> None:
    status, answer, _ = raw_call(
        kit,
        local_kms.endpoint_url,
        target,
        body,
        kit.admin,
        content_type or "application/x-amz-json-1.1",
    )
    assert (status, answer["__type"]) == (400, code), answer
    assert answer["message"]


def test_oversized_and_unframed_requests(kit: Any, kms_data_dir: Path) -> None:
    with LocalKMSServer(kit.config(kms_data_dir, max_request_bytes=2048)) as server:
        host, port = server.address
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("POST", "/", body=b"x" * 4096, headers={"X-Amz-Target": "t"})
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["__type"] == "RequestEntityTooLargeException"
        assert response.getheader("Connection") == "close"
        connection.close()

        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 411")
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().status == 405
        connection.close()
        # Still serving after all that.
        assert kit.boto(server.endpoint_url, kit.admin).list_keys()["Keys"] == []


def test_slow_clients_are_cut_off(kit: Any, kms_data_dir: Path) -> None:
    with (
        LocalKMSServer(kit.config(kms_data_dir, request_timeout=0.3)) as server,
        socket.create_connection(server.address, timeout=10) as sock,
    ):
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert sock.recv(4096) == b""  # closed by the server, not by our 10 s timeout


def test_connection_cap_answers_throttling(kit: Any, kms_data_dir: Path) -> None:
    with LocalKMSServer(kit.config(kms_data_dir, max_connections=1)) as server:
        holder = socket.create_connection(server.address, timeout=10)
        try:
            kms = kit.boto(server.endpoint_url, kit.admin)
            with pytest.raises(ClientError) as caught:
                kms.list_keys()
            assert caught.value.response["Error"]["Code"] == "ThrottlingException"
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        finally:
            holder.close()
        for _ in range(200):  # the slot frees once the server sees the close
            try:
                kms.list_keys()
                break
            except ClientError:
                time.sleep(0.02)
        assert kms.list_keys()["Keys"] == []


def test_concurrent_clients(kit: Any, local_kms: LocalKMSServer) -> None:
    admin = kit.boto(local_kms.endpoint_url, kit.admin)
    key = admin.create_key()["KeyMetadata"]["KeyId"]
    failures: list[str] = []

    def work(worker: int) -> None:
        kms = kit.boto(local_kms.endpoint_url, kit.admin)
        for n in range(15):
            data = f"{worker}:{n}".encode()
            context = {"worker": str(worker)}
            blob = kms.encrypt(KeyId=key, Plaintext=data, EncryptionContext=context)
            out = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=context)
            if out["Plaintext"] != data:
                failures.append(f"{worker}:{n}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert verify_log(local_kms.audit_path).lines == 1 + 8 * 15 * 2


def test_stop_closes_idle_keep_alive_connections(kit: Any, kms_data_dir: Path) -> None:
    server = LocalKMSServer(kit.config(kms_data_dir))
    server.start()
    host, port = server.address
    headers = kit.sign(server.endpoint_url, "TrentService.ListKeys", b"{}", kit.admin)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("POST", "/", body=b"{}", headers=headers)
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Connection") != "close"
    response.read()
    server.stop()  # the connection is idle, kept alive, waiting in the server for a request
    assert connection.sock is not None
    assert connection.sock.recv(1) == b""  # closed by the server, not by our 10 s timeout
    connection.close()
    server.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()


def test_running_server_helper_uses_the_dev_credential(nitrotls_home: Path) -> None:
    with running_server() as url:
        assert url.startswith("http://127.0.0.1:")
        kms = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=DEV_ACCESS_KEY,
            aws_secret_access_key=DEV_SECRET,
        )
        key = kms.create_key()["KeyMetadata"]
        assert key["AWSAccountId"] == DEV_PRINCIPAL.split(":")[4]
        stranger = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="AKIDOTHER",
            aws_secret_access_key=DEV_SECRET,
        )
        with pytest.raises(ClientError) as caught:
            stranger.list_keys()
        assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert (nitrotls_home / "kms" / "keys.sqlite3").is_file()
    log = (nitrotls_home / "kms" / "audit.log").read_text().splitlines()
    assert json.loads(log[-1])["caller"] == "unauthenticated (access key AKIDOTHER)"
    with running_server(nitrotls_home / "elsewhere") as url:  # another home, no keys
        kms = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=DEV_ACCESS_KEY,
            aws_secret_access_key=DEV_SECRET,
        )
        assert kms.list_keys()["Keys"] == []

"""S3Store specifics on moto's server: conditional writes, orphans, prefixes, failures."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from nitrotls.store import (
    Latest,
    S3Store,
    StoreConflictError,
    StoreCorruptError,
    StoreSpecError,
    StoreTooLargeError,
    StoreUnavailableError,
    open_store,
)
from nitrotls.store.base import MAX_BUNDLE_BYTES
from store.store_support import S3_CREDENTIALS, make_s3_store


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_the_endpoint_honours_conditional_puts(moto_endpoint: str, s3_bucket: str) -> None:
    """The S3 store's guarantees rest on these semantics; check the test server has them."""
    client = _client(moto_endpoint)
    first = client.put_object(Bucket=s3_bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exists:
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert exists.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as stale:
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"3", IfMatch='"0123abcd"')
    assert stale.value.response["Error"]["Code"] == "PreconditionFailed"
    client.put_object(Bucket=s3_bucket, Key="k", Body=b"4", IfMatch=first["ETag"])
    assert client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"4"


def test_layout_under_the_prefix(moto_endpoint: str, s3_bucket: str) -> None:
    store = make_s3_store(moto_endpoint, s3_bucket, prefix="/env/prod/")
    store.put("web", "id-1", b"data", expected_previous=None)
    store.put_challenge("tok", "tok.thumb")
    store.put_object("acct", b"sealed")
    lease = store.acquire_lease("web", "gen", 30)
    keys = sorted(
        item["Key"] for item in _client(moto_endpoint).list_objects_v2(Bucket=s3_bucket)["Contents"]
    )
    assert keys == [
        "env/prod/bundles/web/latest",
        "env/prod/bundles/web/objects/id-1",
        "env/prod/challenges/tok",
        "env/prod/leases/web",
        "env/prod/objects/acct",
    ]
    store.release_lease(lease)
    other = make_s3_store(moto_endpoint, s3_bucket, prefix="env/staging")
    assert other.latest("web") is None
    assert other.names() == []


def test_loser_of_the_pointer_race_cleans_up_its_object(moto_endpoint: str, s3_bucket: str) -> None:
    """Both writers see no latest; the second to swap the pointer loses and removes its object."""
    a = make_s3_store(moto_endpoint, s3_bucket)
    b = make_s3_store(moto_endpoint, s3_bucket)
    original = b._pointer
    b._pointer = lambda name: None  # type: ignore[method-assign]  # b read before a published
    a.put("web", "from-a", b"a", expected_previous=None)
    with pytest.raises(StoreConflictError, match="another writer won"):
        b.put("web", "from-b", b"b", expected_previous=None)
    b._pointer = original  # type: ignore[method-assign]
    assert a.latest("web") == Latest("from-a", b"a")
    assert a.list("web") == ["from-a"]


def test_pointer_swap_uses_if_match(moto_endpoint: str, s3_bucket: str) -> None:
    """A writer holding a stale ETag loses even when the ids it compared were equal."""
    a = make_s3_store(moto_endpoint, s3_bucket)
    a.put("web", "id-1", b"1", expected_previous=None)
    stale = a._pointer("web")
    a.put("web", "id-2", b"2", expected_previous="id-1")
    b = make_s3_store(moto_endpoint, s3_bucket)
    b._pointer = lambda name: stale  # type: ignore[method-assign]  # read before id-2 landed
    with pytest.raises(StoreConflictError):
        b.put("web", "id-3", b"3", expected_previous="id-1")
    assert a.latest("web") == Latest("id-2", b"2")


def test_lease_release_never_erases_a_newer_lease(moto_endpoint: str, s3_bucket: str) -> None:
    store = make_s3_store(moto_endpoint, s3_bucket)
    old = store.acquire_lease("web", "a", 30)
    store.release_lease(old)
    new = store.acquire_lease("web", "b", 30)
    store.release_lease(old)
    assert store.renew_lease(new, 30).token == new.token


def test_dangling_pointer_is_corruption(moto_endpoint: str, s3_bucket: str) -> None:
    store = make_s3_store(moto_endpoint, s3_bucket, prefix="")
    store.put("web", "id-1", b"x", expected_previous=None)
    _client(moto_endpoint).delete_object(Bucket=s3_bucket, Key="bundles/web/objects/id-1")
    with pytest.raises(StoreCorruptError):
        store.latest("web")


def test_oversized_object_is_refused_on_read(moto_endpoint: str, s3_bucket: str) -> None:
    store = make_s3_store(moto_endpoint, s3_bucket, prefix="")
    store.put("web", "id-1", b"x", expected_previous=None)
    _client(moto_endpoint).put_object(
        Bucket=s3_bucket, Key="bundles/web/objects/id-1", Body=b"\0" * (MAX_BUNDLE_BYTES + 1)
    )
    with pytest.raises(StoreTooLargeError):
        store.latest("web")


def test_missing_bucket_and_dead_endpoint_are_typed(moto_endpoint: str) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=moto_endpoint, **S3_CREDENTIALS)
    with pytest.raises(StoreUnavailableError, match="NoSuchBucket"):
        store.put("web", "id", b"x", expected_previous=None)
    dead = S3Store("b", endpoint_url="http://127.0.0.1:9", **S3_CREDENTIALS)
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        dead.latest("web")


def test_open_store_s3_spec(
    moto_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    spec = f"s3://{s3_bucket}/team/a?endpoint_url={moto_endpoint}&region=us-east-1"
    store = open_store(spec)
    assert isinstance(store, S3Store)
    assert store.prefix == "team/a/"
    store.put("web", "id-1", b"x", expected_previous=None)
    again = make_s3_store(moto_endpoint, s3_bucket, prefix="team/a")
    assert again.latest("web") == Latest("id-1", b"x")


@pytest.mark.parametrize(
    "spec",
    [
        "s3://",
        "s3:///prefix",
        "s3://bucket/p?unknown=1",
        "s3://bucket/../x",
        "s3://user:pw@bucket/x",
        "s3://bucket/x#frag",
    ],
)
def test_bad_s3_specs(spec: str) -> None:
    with pytest.raises(StoreSpecError):
        open_store(spec)

"""An RFC 8555 (ACME) certificate authority client, built on the ``acme`` library.

The library does the protocol (JWS, nonces, resources); this module owns the flow and the
timing. The library's own polling sleeps a fixed second per round, which alone would make an
issuance take seconds against a CA that answers in milliseconds, so polling here starts at 50 ms
and backs off (honouring ``Retry-After`` up to a cap), all under one deadline. Every failure
becomes a typed :mod:`nitrotls.ca.errors` error carrying the server's problem detail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import requests
from acme import challenges, messages
from acme import errors as acme_errors
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.errors import DeserializationError
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from nitrotls import __version__
from nitrotls.ca.csr import CSRNames, check_dns_name, csr_names, load_csr
from nitrotls.ca.errors import (
    AcmeAccountDoesNotExistError,
    AcmeBadNonceError,
    AcmeChallengeError,
    AcmeError,
    AcmeOrderNotReadyError,
    AcmeProtocolError,
    AcmeTimeoutError,
    AcmeTransportError,
    CSRError,
    problem_error,
)
from nitrotls.ca.hooks import DnsHook, Http01Publisher

log = logging.getLogger(__name__)

T = TypeVar("T")
AccountKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CHALLENGE_TYPES = ("http-01", "dns-01")
BAD_NONCE_RETRIES = 8
PEM_CHAIN = "application/pem-certificate-chain"


@dataclass(frozen=True)
class ExternalAccountBinding:
    """EAB credentials as a CA hands them out: a key id and a base64url HMAC key."""

    kid: str
    hmac_key: str = field(repr=False)


@dataclass(frozen=True)
class AcmeAccount:
    """The account this client acts as; keep ``uri`` to skip registration next run."""

    uri: str
    status: str | None
    contact: tuple[str, ...]


@dataclass(frozen=True)
class Backoff:
    """Polling schedule: ``initial`` seconds, times ``factor`` per round, at most ``maximum``."""

    initial: float = 0.05
    factor: float = 1.5
    maximum: float = 1.0
    retry_after_cap: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


class _Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self._end = time.monotonic() + seconds
        self._seconds = seconds
        self._what = what

    def sleep(self, delay: float, doing: str) -> None:
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise AcmeTimeoutError(
                f"{self._what}: still {doing} after {self._seconds:.0f} s; the CA is slow or "
                "stuck — retry later or raise the timeout"
            )
        time.sleep(min(delay, remaining))


@dataclass
class _Prepared:
    """A challenge we published and must answer, then clean up."""

    identifier: str
    challenge: messages.ChallengeBody
    response: challenges.ChallengeResponse
    cleanup: Callable[[], None]


class PendingOrder:
    """An order whose challenges are answered; the CA validates them while the key is made."""

    def __init__(
        self, ca: AcmeCA, names: CSRNames, order: messages.OrderResource, deadline: _Deadline
    ) -> None:
        self.names = names
        self.order = order
        self.deadline = deadline
        self.prepared: list[_Prepared] = []
        self._ca: AcmeCA | None = ca

    def finish(self, csr: bytes) -> tuple[bytes, ...]:
        """Wait for validation, finalize with ``csr`` and download: the DER chain, leaf first."""
        if self._ca is None:
            raise AcmeError("this ACME order was already finished or abandoned")
        ca, self._ca = self._ca, None
        return ca._finish(self, load_csr(csr))

    def abandon(self) -> None:
        """Withdraw the published challenges (tokens, TXT records); safe to call again."""
        self._ca = None
        prepared, self.prepared = self.prepared, []
        for item in prepared:
            _quietly(item.cleanup, f"cleaning up the challenge for {item.identifier}")


def _jwk(key: AccountKey) -> tuple[JWK, JWASignature]:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise AcmeError(f"ACME account RSA key has {key.key_size} bits; use at least 2048")
        return JWKRSA(key=key), RS256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": ES256, "secp384r1": ES384}
        if key.curve.name not in algs:
            raise AcmeError(f"ACME account key curve {key.curve.name} unsupported; use P-256/384")
        return JWKEC(key=key), algs[key.curve.name]
    raise AcmeError(f"ACME account key must be EC or RSA, got {type(key).__name__}")


def _retry_after(response: requests.Response | None, cap: float) -> float | None:
    """Seconds the server asked us to wait (RFC 9110 §10.2.3), capped; ``None`` if not asked."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        seconds = float(int(value))
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, cap))


class AcmeCA:
    """Certificates from an ACME CA (Let's Encrypt, Pebble, …) for a CSR's names."""

    def __init__(
        self,
        directory_url: str,
        account_key: AccountKey,
        *,
        ca_bundle: Path | str | None = None,
        contact: Sequence[str] = (),
        eab: ExternalAccountBinding | None = None,
        challenge: str = "http-01",
        http01_publisher: Http01Publisher | None = None,
        dns_hook: DnsHook | None = None,
        account_uri: str | None = None,
        timeout: float = 90.0,
        dns_propagation_delay: float = 0.0,
        backoff: Backoff | None = None,
    ) -> None:
        if challenge not in CHALLENGE_TYPES:
            raise AcmeChallengeError(f"unknown challenge {challenge!r}; use http-01 or dns-01")
        if challenge == "http-01" and http01_publisher is None:
            raise AcmeChallengeError("http-01 needs a publisher (a store) for the tokens")
        if challenge == "dns-01" and dns_hook is None:
            raise AcmeChallengeError("dns-01 needs a DNS hook (--dns-hook CMD or a callable)")
        if not 0 < timeout <= 3600:
            raise AcmeError(f"ACME timeout must be in (0, 3600] seconds, got {timeout}")
        self.directory_url = directory_url
        self._jwk, self._alg = _jwk(account_key)
        self._verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
        self._contact = tuple(c if ":" in c else f"mailto:{c}" for c in contact)
        self._eab = eab
        self._challenge = challenge
        self._publisher = http01_publisher
        self._dns_hook = dns_hook
        self._account_uri = account_uri
        self._timeout = timeout
        self._dns_delay = dns_propagation_delay
        self._backoff = backoff or Backoff()
        self._client: ClientV2 | None = None
        self._account: AcmeAccount | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._client is not None:
            self._client.net.session.close()
            self._client = None

    def __enter__(self) -> AcmeCA:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, what: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one ACME exchange; retry ``badNonce``; map every failure to a typed error."""
        for attempt in range(BAD_NONCE_RETRIES + 1):
            try:
                return func(*args, **kwargs)
            except messages.Error as problem:
                if problem.code == "badNonce" and attempt < BAD_NONCE_RETRIES:
                    log.debug("badNonce while %s; retrying (%d)", what, attempt + 1)
                    continue
                raise problem_error(problem.typ, problem.detail, context=what) from None
            except acme_errors.ConflictError as error:
                raise AcmeProtocolError(
                    f"ACME server answered 409 Conflict while {what} ({error.location})"
                ) from None
            except requests.exceptions.SSLError as error:
                raise AcmeTransportError(
                    f"TLS to {self.directory_url} failed while {what}: {error}; for a private CA "
                    "(Pebble) pass its CA certificate as ca_bundle"
                ) from None
            except requests.exceptions.Timeout:
                raise AcmeTimeoutError(
                    f"{self.directory_url} did not answer while {what}"
                ) from None
            except requests.exceptions.RequestException as error:
                raise AcmeTransportError(
                    f"cannot reach {self.directory_url} while {what}: {type(error).__name__}"
                ) from None
            except (acme_errors.Error, DeserializationError, ValueError, KeyError) as error:
                raise AcmeProtocolError(
                    f"unexpected answer from {self.directory_url} while {what}: {error!r}"
                ) from None
        raise AcmeBadNonceError(
            f"ACME server refused {what}: badNonce {BAD_NONCE_RETRIES + 1} times in a row",
            problem_type="urn:ietf:params:acme:error:badNonce",
            detail="repeated badNonce",
        )

    def _acme(self) -> ClientV2:
        if self._client is None:
            net = ClientNetwork(
                key=self._jwk,
                alg=self._alg,
                verify_ssl=True,
                user_agent=f"nitrotls/{__version__}",
                timeout=int(min(30.0, self._timeout)) or 1,
            )
            net.verify_ssl = self._verify  # type: ignore[assignment]  # requests takes a CA path
            directory = self._call(
                "fetching the directory", ClientV2.get_directory, self.directory_url, net
            )
            self._client = ClientV2(directory, net)
        return self._client

    def _post_as_get(self, url: str, what: str, **kwargs: Any) -> requests.Response:
        client = self._acme()
        response: requests.Response = self._call(
            what, client.net.post, url, None, new_nonce_url=client.directory["newNonce"], **kwargs
        )
        return response

    # -- account -----------------------------------------------------------------------------

    def account(self) -> AcmeAccount:
        """The account for this key: trusted from ``account_uri``, found, or registered."""
        if self._account is not None:
            return self._account
        client = self._acme()
        if self._account_uri:
            regr = messages.RegistrationResource(
                uri=self._account_uri, body=messages.Registration()
            )
            client.net.account = regr
            self._account = AcmeAccount(self._account_uri, None, self._contact)
            return self._account
        self._account = self._register(client)
        return self._account

    def _register(self, client: ClientV2) -> AcmeAccount:
        eab = None
        if self._eab is not None:
            try:
                eab = messages.ExternalAccountBinding.from_data(
                    self._jwk.public_key(), self._eab.kid, self._eab.hmac_key, client.directory
                )
            except (ValueError, TypeError) as error:
                raise AcmeError(f"external account binding key is not base64url: {error}") from None
        registration = messages.NewRegistration.from_data(
            contact=self._contact, terms_of_service_agreed=True, external_account_binding=eab
        )

        def new_account() -> messages.RegistrationResource | str:
            try:
                return client.new_account(registration)
            except acme_errors.ConflictError as existing:  # the key already has an account
                return existing.location

        found = self._call("registering the account", new_account)
        if isinstance(found, str):
            regr = messages.RegistrationResource(uri=found, body=messages.Registration())
            client.net.account = regr
            regr = self._call("looking up the existing account", client.query_registration, regr)
        else:
            regr = found
        if not regr.uri:
            raise AcmeProtocolError("the CA registered the account but sent no account URL")
        status = str(regr.body.status) if regr.body.status else None
        log.info("ACME account %s (%s)", regr.uri, status or "status unknown")
        return AcmeAccount(regr.uri, status, tuple(regr.body.contact or ()))

    # -- issuance ----------------------------------------------------------------------------

    def issue(self, csr: bytes) -> tuple[bytes, ...]:
        """Order, prove control, finalize and download: the DER chain, leaf first."""
        request = load_csr(csr)
        names = csr_names(request)
        try:
            return self._issue_once(request, names)
        except AcmeAccountDoesNotExistError:
            if not self._account_uri:
                raise
            self._forget_account()
            return self._issue_once(request, names)

    def begin(self, domains: Sequence[str]) -> PendingOrder:
        """Order certificates for DNS ``domains`` and answer their challenges, without waiting.

        The CA validates while the caller makes and seals the key; :meth:`PendingOrder.finish`
        then takes the CSR (which must name exactly ``domains``), and
        :meth:`PendingOrder.abandon` withdraws the published challenges if no CSR comes.
        """
        names = CSRNames(dns=tuple(dict.fromkeys(check_dns_name(d) for d in domains)), ips=())
        if not names.dns:
            raise CSRError("an order needs at least one DNS name")
        try:
            return self._begin(names)
        except AcmeAccountDoesNotExistError:
            if not self._account_uri:
                raise
            self._forget_account()
            return self._begin(names)

    def _forget_account(self) -> None:
        """The stored account URL is unknown to the CA: the next call registers again."""
        log.warning("ACME account %s is unknown to the CA; registering again", self._account_uri)
        self._account_uri = None
        self._account = None
        self._acme().net.account = None

    def _issue_once(
        self, request: x509.CertificateSigningRequest, names: CSRNames
    ) -> tuple[bytes, ...]:
        pending = self._begin(names)
        try:
            return self._finish(pending, request)
        finally:
            pending.abandon()

    def _begin(self, names: CSRNames) -> PendingOrder:
        self.account()
        client = self._acme()
        deadline = _Deadline(self._timeout, f"issuing for {_label(names)}")
        order = self._new_order(names)
        pending = PendingOrder(self, names, order, deadline)
        try:
            for authzr in order.authorizations:
                item = self._prepare(authzr)
                if item is not None:
                    pending.prepared.append(item)
            if pending.prepared and self._challenge == "dns-01" and self._dns_delay > 0:
                deadline.sleep(self._dns_delay, "waiting for DNS propagation")
            for item in pending.prepared:
                self._call(
                    f"answering {_kind(item.challenge)} for {item.identifier}",
                    client.answer_challenge,
                    item.challenge,
                    item.response,
                )
        except BaseException:
            pending.abandon()
            raise
        return pending

    def _finish(
        self, pending: PendingOrder, request: x509.CertificateSigningRequest
    ) -> tuple[bytes, ...]:
        names = csr_names(request)
        if set(names.dns) != set(pending.names.dns) or set(names.ips) != set(pending.names.ips):
            raise CSRError(
                f"the CSR names {_label(names)}, but the order was for {_label(pending.names)}"
            )
        try:
            self._await_authorizations(pending.order, pending.deadline)
        finally:
            pending.abandon()
        pem = request.public_bytes(serialization.Encoding.PEM)
        chain = self._finalize(pending.order.update(csr_pem=pem), pending.deadline)
        _check_chain(chain, request, names)
        return tuple(cert.public_bytes(serialization.Encoding.DER) for cert in chain)

    def _new_order(self, names: CSRNames) -> messages.OrderResource:
        """Order exactly the CSR's subjectAltName identifiers (never its common name)."""
        client = self._acme()
        identifiers = [
            messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names.dns
        ]
        identifiers += [
            messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip)) for ip in names.ips
        ]
        response: requests.Response = self._call(
            "creating the order",
            client.net.post,
            client.directory["newOrder"],
            messages.NewOrder(identifiers=identifiers),
            new_nonce_url=client.directory["newNonce"],
        )
        body = self._parse("the order", messages.Order.from_json, response)
        authorizations = []
        for url in body.authorizations:
            fetched = self._post_as_get(url, "fetching an authorization")
            authz = self._parse("an authorization", messages.Authorization.from_json, fetched)
            authorizations.append(messages.AuthorizationResource(body=authz, uri=url))
        location = response.headers.get("Location")
        if not location:
            raise AcmeProtocolError("the CA created an order without a Location header")
        return messages.OrderResource(body=body, uri=location, authorizations=authorizations)

    def _parse(self, what: str, decode: Callable[[Any], T], response: requests.Response) -> T:
        try:
            return decode(response.json())
        except (DeserializationError, ValueError, TypeError, KeyError) as error:
            raise AcmeProtocolError(f"the CA sent {what} that does not parse: {error}") from None

    def _prepare(self, authzr: messages.AuthorizationResource) -> _Prepared | None:
        body = authzr.body
        identifier = str(body.identifier.value)
        if body.status == messages.STATUS_VALID:
            return None  # the CA reused an earlier authorization
        if body.status != messages.STATUS_PENDING:
            raise AcmeProtocolError(f"authorization for {identifier} is {body.status}, not pending")
        chosen = next((c for c in body.challenges if _kind(c) == self._challenge), None)
        if chosen is None:
            offered = ", ".join(sorted({_kind(c) for c in body.challenges})) or "none"
            raise AcmeChallengeError(
                f"the CA offers no {self._challenge} challenge for {identifier} "
                f"(offered: {offered})"
            )
        response, validation = chosen.chall.response_and_validation(self._jwk)
        if self._challenge == "http-01":
            return self._publish_http01(identifier, chosen, response, validation)
        return self._publish_dns01(identifier, body.wildcard, chosen, response, validation)

    def _publish_http01(
        self,
        identifier: str,
        chosen: messages.ChallengeBody,
        response: challenges.ChallengeResponse,
        validation: str,
    ) -> _Prepared:
        publisher = self._publisher
        assert publisher is not None
        token = chosen.chall.encode("token")
        _guard(
            lambda: publisher.put_challenge(token, validation), f"publishing token for {identifier}"
        )
        return _Prepared(identifier, chosen, response, lambda: publisher.delete_challenge(token))

    def _publish_dns01(
        self,
        identifier: str,
        wildcard: bool | None,
        chosen: messages.ChallengeBody,
        response: challenges.ChallengeResponse,
        validation: str,
    ) -> _Prepared:
        hook = self._dns_hook
        assert hook is not None
        domain = identifier[2:] if identifier.startswith("*.") else identifier
        record = chosen.chall.validation_domain_name(domain)
        _guard(lambda: hook("add", record, validation), f"adding TXT {record}")
        return _Prepared(identifier, chosen, response, lambda: hook("remove", record, validation))

    def _await_authorizations(self, order: messages.OrderResource, deadline: _Deadline) -> None:
        client = self._acme()
        pending = list(order.authorizations)
        delays = self._backoff.delays()
        while pending:
            waiting: list[messages.AuthorizationResource] = []
            last: requests.Response | None = None
            for authzr in pending:
                what = f"polling the authorization for {authzr.body.identifier.value}"
                updated, last = self._call(what, client.poll, authzr)
                if updated.body.status == messages.STATUS_VALID:
                    continue
                if updated.body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                    waiting.append(updated)
                    continue
                raise _authorization_failure(updated)
            pending = waiting
            if pending:
                asked = _retry_after(last, self._backoff.retry_after_cap)
                deadline.sleep(next(delays) if asked is None else asked, "validating challenges")

    def _finalize(
        self, order: messages.OrderResource, deadline: _Deadline
    ) -> list[x509.Certificate]:
        client = self._acme()
        try:
            order = self._call("finalizing the order", client.begin_finalization, order)
            finalized = True
        except AcmeOrderNotReadyError:
            finalized = False
        delays = self._backoff.delays()
        response: requests.Response | None = None
        while True:
            body = order.body
            if body.status == messages.STATUS_VALID and body.certificate:
                return self._download(body.certificate)
            if body.status == messages.STATUS_INVALID:
                if body.error is not None:
                    raise problem_error(body.error.typ, body.error.detail, context="issuing")
                raise AcmeProtocolError("the CA marked the order invalid without a reason")
            if body.status == messages.STATUS_READY and not finalized:
                order = self._call("finalizing the order", client.begin_finalization, order)
                finalized = True
                continue
            asked = _retry_after(response, self._backoff.retry_after_cap)
            deadline.sleep(next(delays) if asked is None else asked, "waiting for issuance")
            response = self._post_as_get(order.uri, "polling the order")
            order = order.update(body=self._parse("the order", messages.Order.from_json, response))

    def _download(self, url: str) -> list[x509.Certificate]:
        headers = {"Content-Type": ClientNetwork.JOSE_CONTENT_TYPE, "Accept": PEM_CHAIN}
        response = self._post_as_get(url, "downloading the certificate", headers=headers)
        try:
            chain = x509.load_pem_x509_certificates(response.content)
        except ValueError as error:
            raise AcmeProtocolError(
                f"the certificate download is not a PEM chain: {error}"
            ) from None
        return chain


def _kind(challenge: messages.ChallengeBody) -> str:
    """The challenge's type, also for types the acme library does not know."""
    return str(challenge.to_partial_json().get("type", "unknown"))


def _label(names: CSRNames) -> str:
    listed = [*names.dns, *(str(ip) for ip in names.ips)]
    return ", ".join(listed[:3]) + (f" (+{len(listed) - 3})" if len(listed) > 3 else "")


def _guard(action: Callable[[], None], what: str) -> None:
    """Run a publisher or hook; any failure becomes :class:`AcmeChallengeError`."""
    try:
        action()
    except AcmeChallengeError:
        raise
    except Exception as error:
        raise AcmeChallengeError(f"{what} failed: {type(error).__name__}: {error}") from error


def _quietly(action: Callable[[], None], what: str) -> None:
    try:
        action()
    except Exception as error:
        log.warning("%s failed: %s", what, error)


def _authorization_failure(authzr: messages.AuthorizationResource) -> AcmeError:
    identifier = authzr.body.identifier.value
    for challb in authzr.body.challenges:
        if challb.error is not None:
            context = f"validating {identifier} with {_kind(challb)}"
            return problem_error(challb.error.typ, challb.error.detail, context=context)
    return AcmeProtocolError(
        f"authorization for {identifier} became {authzr.body.status} without a problem document"
    )


def _check_chain(
    chain: list[x509.Certificate], request: x509.CertificateSigningRequest, names: CSRNames
) -> None:
    """Fail closed if the CA certified another key or fewer names than asked."""
    if not chain:
        raise AcmeProtocolError("the CA returned an empty certificate chain")
    leaf = chain[0]
    if leaf.public_key() != request.public_key():
        raise AcmeProtocolError("the CA's leaf certificate is for a different key than the CSR's")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise AcmeProtocolError("the CA's leaf certificate has no subjectAltName") from None
    dns = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    ips = set(san.get_values_for_type(x509.IPAddress))
    missing = [n for n in names.dns if n not in dns] + [str(i) for i in names.ips if i not in ips]
    if missing:
        raise AcmeProtocolError(f"the CA's certificate lacks requested names: {missing}")

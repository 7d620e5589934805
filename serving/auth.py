"""Optional bearer-token authentication for `dxpipe serve`, with per-model scopes.

Tokens live in a JSON file (`--auth_token_file`) that holds only their SHA-256 digests:

    {"tokens": [{"name": "triage-frontend", "sha256": "<64 hex digits>", "models": ["wdbc"]},
                {"name": "ops", "sha256": "...", "models": ["*"]}]}

`python -m serving.auth new --name triage-frontend --model wdbc` makes a token, prints it once, and prints
the entry to add. A token is 32 random bytes, so a plain SHA-256 (not a slow password hash) is the right
digest: there is nothing to brute-force, and checking it costs a microsecond per request. The presented
token's digest is compared with every stored one by `hmac.compare_digest`, all of them every time, so
the time taken does not tell which entry (if any) came close.

Answers are TF Serving's error shape: 401 `{"error": ...}` with `WWW-Authenticate: Bearer` when the token is
missing or unknown, 403 when the token may not use the model. Status, metadata and metrics can be made
public (`--auth_public=status,metrics`) for probes and scrapers.

This module is pure apart from reading the file; the REST handler calls `AuthPolicy.check`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Iterable, Sequence

import orjson

from serving.errors import ServingError

STATUS, METADATA, METRICS, INFERENCE, OTHER = "status", "metadata", "metrics", "inference", "other"
PUBLIC_CHOICES = (STATUS, METADATA, METRICS)
ALL_MODELS = "*"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BEARER = re.compile(r"[Bb]earer +([A-Za-z0-9._~+/=-]+) *")


@dataclasses.dataclass(frozen=True)
class TokenGrant:
    """One token: who holds it, its digest, and the models it may use.

    Attributes:
        name: The holder, for logs and messages (never the token).
        digest: SHA-256 of the token's UTF-8 bytes.
        models: Model names, or `*` for all.
    """

    name: str
    digest: bytes
    models: frozenset[str]

    def allows(self, model: str) -> bool:
        """Whether this token may use `model`."""
        return ALL_MODELS in self.models or model in self.models


def digest_of(token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclasses.dataclass(frozen=True)
class Denial:
    """Why a request is refused: the HTTP status and TF Serving-shaped message."""

    status: int
    message: str


class AuthPolicy:
    """Who may call what.

    Args:
        grants: The tokens.
        public: Route kinds answered without a token (`status`, `metadata`, `metrics`).
    """

    def __init__(self, grants: Sequence[TokenGrant], public: Iterable[str] = ()):
        self.grants = tuple(grants)
        self.public = frozenset(public)
        unknown = self.public - set(PUBLIC_CHOICES)
        if unknown:
            raise ServingError(
                f"--auth_public={','.join(sorted(unknown))} is not a route kind; use any of {', '.join(PUBLIC_CHOICES)}."
            )
        if not self.grants:
            raise ServingError(
                "The token file holds no token: add one (python -m serving.auth new --name ...)."
            )

    @classmethod
    def load(cls, path: str, public: Iterable[str] = ()) -> AuthPolicy:
        """Reads a token file.

        Raises:
            ServingError: The file cannot be read or an entry is malformed, naming the entry and the fix.
        """
        try:
            with open(path, "rb") as handle:
                doc = orjson.loads(handle.read())
        except OSError as exc:
            raise ServingError(f"Cannot read --auth_token_file {path}: {exc.strerror}.") from None
        except orjson.JSONDecodeError as exc:
            raise ServingError(f"--auth_token_file {path} is not JSON: {exc}.") from None
        entries = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise ServingError(f'--auth_token_file {path} must be {{"tokens": [...]}}.')
        grants = []
        for i, entry in enumerate(entries):
            where = f"--auth_token_file {path} token {i}"
            if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "models"}:
                raise ServingError(f"{where}: expected an object with name, sha256 and models only.")
            name, digest, models = entry.get("name"), entry.get("sha256"), entry.get("models")
            if not isinstance(name, str) or not name:
                raise ServingError(f"{where}: 'name' must be a non-empty string.")
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise ServingError(
                    f"{where} ({name}): 'sha256' must be 64 lower-case hex digits (the token's digest, never the token)."
                )
            if (
                not isinstance(models, list)
                or not models
                or not all(isinstance(m, str) and m for m in models)
            ):
                raise ServingError(f"{where} ({name}): 'models' must list model names, or [\"*\"] for all.")
            grants.append(TokenGrant(name, bytes.fromhex(digest), frozenset(models)))
        return cls(grants, public)

    def _grant(self, authorization: str | None) -> TokenGrant | None:
        if not authorization:
            return None
        match = _BEARER.fullmatch(authorization)
        if match is None:
            return None
        digest = digest_of(match.group(1))
        found = None
        for grant in self.grants:  # every entry, every time: the time taken does not depend on the match
            if hmac.compare_digest(digest, grant.digest):
                found = grant
        return found

    def check(self, authorization: str | None, kind: str, model: str | None) -> Denial | None:
        """Decides one request.

        Args:
            authorization: The `Authorization` header, if any.
            kind: `status`, `metadata`, `metrics`, `inference` or `other`.
            model: The model named by the path (None for metrics and unknown paths).

        Returns:
            None to let it through, or the refusal.
        """
        if kind in self.public:
            return None
        grant = self._grant(authorization)
        if grant is None:
            what = "Missing" if not authorization else "Invalid"
            return Denial(
                401, f"{what} bearer token: send 'Authorization: Bearer <token>' with a token you were issued"
            )
        if model is not None and not grant.allows(model):
            return Denial(403, f"The token of {grant.name!r} may not use model {model!r}")
        return None


def new_entry(name: str, models: Sequence[str]) -> tuple[str, dict]:
    """A fresh token and the entry that stores its digest."""
    token = secrets.token_urlsafe(32)
    return token, {"name": name, "sha256": digest_of(token).hex(), "models": list(models)}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.auth new --name NAME --model MODEL...`: prints a new token and its file entry."""
    parser = argparse.ArgumentParser(prog="python -m serving.auth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="Make a token.")
    new.add_argument("--name", required=True, help="Who holds it (shown in messages, never the token).")
    new.add_argument(
        "--model", action="append", required=True, help="A model it may use (repeat; '*' for all)."
    )
    args = parser.parse_args(argv)
    token, entry = new_entry(args.name, args.model)
    sys.stdout.write(f"token (give it to {args.name}; it is not stored anywhere): {token}\n")
    sys.stdout.write(f'add to the "tokens" list of --auth_token_file: {orjson.dumps(entry).decode()}\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())

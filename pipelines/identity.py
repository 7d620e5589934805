"""Who is acting: the authenticated MLflow user on a server, the OS account on the embedded store.

Author and reviewer are never free text, an environment variable or a tag someone can edit:

- With an http(s) tracking URI, the server says who the caller is. dxpipe asks its
  `GET /api/2.0/dxpipe/whoami` endpoint (served by the dxpipe MLflow server plugin) with the credentials
  MLflow's own client sends (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` as HTTP basic auth,
  or `MLFLOW_TRACKING_TOKEN` as a bearer token). If the server cannot vouch (no plugin, bad credentials),
  dxpipe refuses to act rather than guess.
- With the embedded SQLite store there is no server to ask: the identity is the OS account the process
  runs as (`pwd.getpwuid(os.getuid())`; LOGNAME/USER are ignored because anyone can set them), marked
  unauthenticated. Two people sharing one OS account are one person to dxpipe.

Names are compared only after `normalise_name`, so "Alice", "alice " and "alice" followed by a
zero-width space are one person.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import unicodedata

from pipelines.errors import DxpipeError
from pipelines.redact import redact_uri

WHOAMI_PATH = "/api/2.0/dxpipe/whoami"
PROVENANCE_PATH = "/api/2.0/dxpipe/model-versions/provenance"
WHOAMI_TIMEOUT_S = 10.0


class IdentityError(DxpipeError):
    """Who is acting cannot be established; nothing was done."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """A person as dxpipe knows them.

    Attributes:
        name: The account name (as the server or the OS reports it, not normalised).
        authenticated: True when an MLflow server authenticated the name; False for an OS account.
        source: Where the name came from, e.g. "mlflow-server http://host:5000" or "os-account uid 1000".
    """

    name: str
    authenticated: bool
    source: str

    @property
    def key(self) -> str:
        """The normalised name: what comparisons (four-eyes) use."""
        return normalise_name(self.name)


# Unicode "format" characters (Cf: zero-width space/joiners, bidi marks, soft hyphen, BOM) render as nothing
# and would let "alice\u200b" pass as a second person.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zl", "Zp"})


def normalise_name(s: str) -> str:
    """Returns the comparable form of a person's name.

    Unicode NFKC (so full-width and compatibility forms fold to plain letters), case-folded, with
    invisible/format and control characters removed and surrounding whitespace stripped.
    """
    folded = unicodedata.normalize("NFKC", str(s)).casefold()
    visible = "".join(ch for ch in folded if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)
    return unicodedata.normalize("NFKC", visible).strip()


def os_account() -> Identity:
    """The OS account this process runs as (its real uid), unauthenticated."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid-{uid}"  # a container user without a passwd entry is still one distinct account
    return Identity(name=name, authenticated=False, source=f"os-account uid {uid}")


def _credentials() -> tuple[tuple[str, str] | None, dict[str, str]]:
    """The basic-auth pair or bearer header MLflow's own client would send."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    auth = (user, password or "") if user else None
    headers = {"Authorization": f"Bearer {token}"} if token and not user else {}
    return auth, headers


def _server_identity(tracking_uri: str) -> Identity:
    import requests

    url = tracking_uri.rstrip("/") + WHOAMI_PATH
    shown = redact_uri(tracking_uri)
    auth, headers = _credentials()
    try:
        response = requests.get(url, auth=auth, headers=headers, timeout=WHOAMI_TIMEOUT_S)
    except requests.exceptions.RequestException as exc:
        raise IdentityError(
            f"cannot ask the MLflow server at {shown} who you are ({type(exc).__name__}); start the server "
            "or fix MLFLOW_TRACKING_URI, then retry."
        ) from exc
    if response.status_code in (401, 403):
        raise IdentityError(
            f"the MLflow server at {shown} did not accept your credentials (HTTP {response.status_code}); "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your MLflow account."
        )
    if response.status_code != 200:
        raise IdentityError(
            f"the MLflow server at {shown} cannot vouch for who you are (HTTP {response.status_code} on "
            f"{WHOAMI_PATH}); it needs the dxpipe server plugin (see README, 'Shared server'). dxpipe will "
            "not record an author or reviewer it cannot verify."
        )
    try:
        body = response.json()
        name = body["user"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(
            f"the MLflow server at {shown} answered {WHOAMI_PATH} without a 'user' field; check the dxpipe "
            "server plugin's version."
        ) from exc
    if not isinstance(name, str) or not normalise_name(name):
        raise IdentityError(
            f"the MLflow server at {shown} reports no user for your credentials ({name!r}); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."
        )
    return Identity(name=name, authenticated=True, source=f"mlflow-server {shown}")


def current_identity(tracking_uri: str | None) -> Identity:
    """Who is acting against this tracking store.

    Args:
        tracking_uri: The resolved tracking URI (http(s) for a server, sqlite for the embedded store).

    Returns:
        The authenticated server user, or the OS account (unauthenticated) for the embedded store.

    Raises:
        IdentityError: The server cannot be reached, rejects the credentials or cannot vouch.
    """
    uri = tracking_uri or ""
    if uri.startswith(("http://", "https://")):
        return _server_identity(uri)
    return os_account()


def server_recorded_approver(tracking_uri: str | None, model: str, version: str) -> Identity | None:
    """Who the shared server recorded as having set `champion` on a version (an approval in the MLflow UI).

    Only a server running the dxpipe app records this, after checking on the server that the user is a
    reviewer and not an author of the version; the embedded store records nobody, so it returns None there.

    Args:
        tracking_uri: The resolved tracking URI.
        model: Registered model name.
        version: The version the alias points at.

    Returns:
        The approving reviewer as an authenticated identity, or None when nothing accountable is recorded.

    Raises:
        IdentityError: The server cannot be reached or rejects the credentials.
    """
    uri = tracking_uri or ""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    shown = redact_uri(uri)
    auth, headers = _credentials()
    try:
        response = requests.get(
            uri.rstrip("/") + PROVENANCE_PATH,
            params={"name": model, "version": str(version)},
            auth=auth,
            headers=headers,
            timeout=WHOAMI_TIMEOUT_S,
        )
    except requests.exceptions.RequestException as exc:
        raise IdentityError(
            f"cannot ask the MLflow server at {shown} who approved '{model}' version {version} "
            f"({type(exc).__name__}); start the server or fix MLFLOW_TRACKING_URI, then retry."
        ) from exc
    if response.status_code in (401, 403):
        raise IdentityError(
            f"the MLflow server at {shown} did not accept your credentials (HTTP {response.status_code}); "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your MLflow account."
        )
    if response.status_code != 200:
        return None  # no plugin, or a version the server never saw created: nobody accountable
    try:
        name = response.json().get("champion_set_by")
    except (ValueError, AttributeError):
        return None
    if not isinstance(name, str) or not normalise_name(name):
        return None
    return Identity(name=name, authenticated=True, source=f"mlflow-server {shown} (approval in the UI)")

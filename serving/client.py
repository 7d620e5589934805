"""A small client for any TF Serving REST endpoint (`dxpipe serve` or `tensorflow_model_server`).

    client = ServingClient("http://127.0.0.1:8501")
    client.wait_until_available("wdbc")
    client.predict("wdbc", instances=[{"radius_mean": 17.99, ...}])    # -> [{"probability": ..., ...}]
    client.predict("wdbc", inputs={"radius_mean": [17.99, 20.57], ...}) # -> {"probability": [...], ...}
    client.classify("wdbc", [{"radius_mean": 17.99, ...}], signature_name="classification")

Numpy arrays and scalars are accepted anywhere in a request, bytes become `{"b64": ...}`; NaN and infinities
are sent as the `NaN`/`Infinity` tokens TF Serving accepts. Every failure raises `ServingClientError` with the
server's message and HTTP status.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from serving.errors import ServingClientError
from serving.input_contract import CONTRACT_HEADER

DEFAULT_URL = "http://127.0.0.1:8501"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


class ServingClient:
    """Talks to one TF Serving REST endpoint.

    Args:
        base_url: e.g. `http://127.0.0.1:8501`.
        timeout: Seconds per HTTP request.
        session: A `requests.Session` to reuse (one is made otherwise).
        token: A bearer token for a server started with `--auth_token_file`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        token: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.last_headers: Mapping[str, str] = {}  # of the last answer
        # The version a dxpipe model's last :predict answer names (its locked threshold decided), or None.
        self.last_model_version: str | None = None

    def _model_path(self, model: str, version: int | None, label: str | None) -> str:
        if version is not None and label is not None:
            raise ValueError("Give a version or a label, not both.")
        path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{urllib.parse.quote(label, safe='')}"
        return path

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = self.base_url + path
        data = None if body is None else json.dumps(body, default=_json_default).encode()
        try:
            response = self.session.request(
                method, url, data=data, timeout=self.timeout, headers={"Content-Type": "application/json"}
            )
        except requests.RequestException as exc:
            reason = exc.__class__.__name__
            inner = getattr(exc, "args", ())
            detail = str(inner[0]) if inner else ""
            if "Connection refused" in detail or isinstance(exc, requests.ConnectionError):
                reason = "connection refused or reset"
            elif isinstance(exc, requests.Timeout):
                reason = f"no answer within {self.timeout:g}s"
            raise ServingClientError(f"cannot reach TF Serving at {self.base_url}: {reason}") from None
        try:
            # TF Serving writes string tensors' bytes raw; bytes that are not UTF-8 survive as surrogate escapes
            # (`text.encode("utf-8", "surrogateescape")` gives them back).
            payload = (
                json.loads(response.content.decode("utf-8", "surrogateescape")) if response.content else None
            )
        except ValueError:
            payload = None
        self.last_headers = response.headers
        if response.status_code != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            text = message or response.text.strip()[:200] or response.reason
            raise ServingClientError(
                f"{method} {path} failed with HTTP {response.status_code}: {text}", response.status_code
            )
        if payload is None:
            raise ServingClientError(
                f"{method} {path} answered HTTP 200 without a JSON body", response.status_code
            )
        return payload

    def status(self, model: str, version: int | None = None, label: str | None = None) -> list[dict]:
        """The `model_version_status` entries (highest version first)."""
        return self._call("GET", self._model_path(model, version, label))["model_version_status"]

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """The metadata response: `{"model_spec": ..., "metadata": {"signature_def": {"signature_def": ...}}}`."""
        return self._call("GET", self._model_path(model, version, label) + "/metadata")

    def carries_input_contract(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> bool:
        """Whether the version checks inputs against its schema (then JSON `null` is a missing value)."""
        self.metadata(model, version, label)
        return self.last_headers.get(CONTRACT_HEADER) == "schema"

    def signature_defs(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """The SignatureDefs by signature name (the doubly nested part of the metadata)."""
        return self.metadata(model, version, label)["metadata"]["signature_def"]["signature_def"]

    def predict(
        self,
        model: str,
        instances: Sequence[Any] | None = None,
        *,
        inputs: Any = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> Any:
        """Calls :predict in row format (`instances`) or columnar format (`inputs`).

        Returns:
            The `predictions` list for row format, the `outputs` for columnar format.
        """
        if (instances is None) == (inputs is None):
            raise ValueError("Give exactly one of instances (row format) or inputs (columnar format).")
        body: dict[str, Any] = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        result = self._call("POST", self._model_path(model, version, label) + ":predict", body)
        self.last_model_version = result.get("model_version")
        return result["predictions"] if instances is not None else result["outputs"]

    def classify(
        self,
        model: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list:
        """:classify; returns `results`: per example, a list of [label, score]."""
        return self._examples_call("classify", model, examples, context, signature_name, version, label)

    def regress(
        self,
        model: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list:
        """:regress; returns `results`: one value per example."""
        return self._examples_call("regress", model, examples, context, signature_name, version, label)

    def _examples_call(self, verb, model, examples, context, signature_name, version, label) -> list:
        body: dict[str, Any] = {"examples": list(examples)}
        if context is not None:
            body["context"] = context
        if signature_name:
            body["signature_name"] = signature_name
        return self._call("POST", self._model_path(model, version, label) + f":{verb}", body)["results"]

    def wait_until_available(self, model: str, timeout: float = 60.0, poll: float = 0.2) -> int:
        """Waits until some version of `model` is AVAILABLE; returns the highest such version.

        Raises:
            ServingClientError: Not available within `timeout` seconds (the last error is included).
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                versions = [int(s["version"]) for s in self.status(model) if s["state"] == "AVAILABLE"]
                if versions:
                    return max(versions)
                last = "no version is AVAILABLE"
            except ServingClientError as exc:
                last = exc.message
            if time.monotonic() >= deadline:
                raise ServingClientError(
                    f"model {model} not available at {self.base_url} after {timeout:g}s: {last}"
                )
            time.sleep(poll)

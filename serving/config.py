"""Typed, validated configuration of `dxpipe serve`: which models, where, which versions, how to batch.

The files are TF Serving's own formats, so one `models.config` (and one batching file) drives both `dxpipe
serve` here and `tensorflow_model_server` in production (see `serving/k8s/`). `models.config` is parsed with TF
Serving's protos from the `tensorflow-serving-api` package; everything is checked once, here, and turned into
frozen dataclasses, so the server never looks at a proto again.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ModelConfigError

PolicyKind = Literal["latest", "specific", "all"]


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the numbered version directories are served (`model_version_policy`).

    Attributes:
        kind: `latest` (the `num_versions` highest), `specific` (exactly `versions`) or `all`.
        num_versions: For `latest`.
        versions: For `specific`, ascending.
    """

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "specific", "all"):
            raise ModelConfigError(f"model_version_policy {self.kind!r} is not one of latest, specific, all.")
        if self.kind == "latest" and self.num_versions < 1:
            raise ModelConfigError(
                f"model_version_policy latest.num_versions is {self.num_versions}; it must be at least 1."
            )
        if self.kind == "specific" and not self.versions:
            raise ModelConfigError(
                "model_version_policy specific {} lists no versions: add `versions: N` lines, or use latest {}."
            )

    def select(self, candidates: list[int]) -> list[int]:
        """The versions to serve among the loadable ones (ascending)."""
        ordered = sorted(candidates)
        if self.kind == "latest":
            return ordered[-self.num_versions :]
        if self.kind == "specific":
            wanted = set(self.versions)
            return [v for v in ordered if v in wanted]
        return ordered


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model.

    Attributes:
        name: The `{name}` of `/v1/models/{name}`.
        base_path: Directory holding numbered version directories (absolute).
        policy: Which versions to serve.
        labels: Version labels (`/labels/{label}`), label -> version.
    """

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ModelConfigError('A model config has an empty name: set `name: "..."` (or --model_name).')
        if "/" in self.name or ":" in self.name:
            raise ModelConfigError(
                f"Model name {self.name!r} contains '/' or ':', which cannot appear in a /v1/models/ URL."
            )
        if not self.base_path:
            raise ModelConfigError(
                f"Model {self.name!r} has no base_path: point it at the directory of numbered versions."
            )
        for label, version in self.labels.items():
            if version <= 0:
                raise ModelConfigError(
                    f"Model {self.name!r}: label {label!r} points at version {version}; use a positive number."
                )


def single_model_config(name: str, base_path: str) -> ModelConfig:
    """The config that `--model_name`/`--model_base_path` describe."""
    return ModelConfig(name=name, base_path=os.path.abspath(base_path) if base_path else base_path)


def _hint(message: str, names: list[str]) -> str:
    m = re.search(r'has no field named "([^"]+)"', message)
    if not m:
        return ""
    close = difflib.get_close_matches(m.group(1), names, n=1)
    return f' Did you mean "{close[0]}"?' if close else ""


def parse_model_config_text(text: str, source: str = "<models.config>") -> tuple[ModelConfig, ...]:
    """Parses a TF Serving `ModelServerConfig` text proto.

    Args:
        text: The file's content.
        source: Where it came from, for messages.

    Raises:
        ModelConfigError: Syntax errors (with a did-you-mean for misspelt fields), `custom_model_config`, a
            platform other than tensorflow, duplicate names, empty names or base paths, bad policies.
    """
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        fields = [f.name for f in model_server_config_pb2.ModelConfig.DESCRIPTOR.fields]
        fields += [f.name for f in model_server_config_pb2.ModelServerConfig.DESCRIPTOR.fields]
        raise ModelConfigError(f"{source}: {str(exc).rstrip('.')}.{_hint(str(exc), fields)}") from None
    if proto.WhichOneof("config") == "custom_model_config":
        raise ModelConfigError(f"{source}: custom_model_config is not supported; use model_config_list.")
    configs: list[ModelConfig] = []
    seen: set[str] = set()
    base_dir = os.getcwd()
    for entry in proto.model_config_list.config:
        where = f"{source}: model {entry.name!r}"
        if entry.name in seen:
            raise ModelConfigError(f"{where} is configured twice; model names must be unique.")
        seen.add(entry.name)
        if entry.model_platform not in ("", "tensorflow"):
            raise ModelConfigError(
                f'{where} has model_platform {entry.model_platform!r}; only "tensorflow" SavedModels are served.'
            )
        choice = entry.model_version_policy.WhichOneof("policy_choice")
        try:
            if choice == "specific":
                versions = tuple(sorted(entry.model_version_policy.specific.versions))
                policy = VersionPolicy("specific", versions=versions)
            elif choice == "all":
                policy = VersionPolicy("all")
            else:
                # An unset num_versions (0) means 1, as in TF Serving.
                policy = VersionPolicy(
                    "latest", num_versions=entry.model_version_policy.latest.num_versions or 1
                )
            configs.append(
                ModelConfig(
                    name=entry.name,
                    base_path=os.path.join(base_dir, entry.base_path) if entry.base_path else "",
                    policy=policy,
                    labels=dict(entry.version_labels),
                )
            )
        except ModelConfigError as exc:
            raise ModelConfigError(f"{where}: {exc}") from None
    if not configs:
        raise ModelConfigError(f"{source} configures no model: add model_config_list {{ config {{ ... }} }}.")
    return tuple(configs)


def load_model_config_file(path: str | os.PathLike) -> tuple[ModelConfig, ...]:
    """Reads and parses a `models.config` file.

    Raises:
        ModelConfigError: The file cannot be read or is invalid.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ModelConfigError(f"Cannot read --model_config_file {path}: {exc.strerror}.") from None
    return parse_model_config_text(text, str(path))


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching (TF Serving's `BatchingParameters`).

    Attributes:
        enabled: Merge concurrent requests for the same model version and signature into one model call.
        max_batch_size: Most rows in one model call; a larger request runs on its own. 1000 rows, TF
            Serving's own scheduler default: a cap near one request's size (64 rows, this server's default
            until measured) keeps batch-64 requests from ever sharing a call, and then each pays its own
            hand-off to a model thread, which costs the event loop more than the shared call saves.
        batch_timeout_micros: How long a non-full batch may wait for more requests. 0 closes a batch at the
            end of the event-loop turn that received it, which batches every request that arrived together
            and adds no latency to a lone one.
        num_batch_threads: Model calls that may run at once.
        max_enqueued_batches: Queue bound per model version and signature, in batches; past it a request is
            refused with 503 UNAVAILABLE instead of waiting.
    """

    enabled: bool = True
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = 2
    max_enqueued_batches: int = 64

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ModelConfigError(
                    f"Batching parameter {name} is {getattr(self, name)}; it must be at least 1."
                )
        if self.batch_timeout_micros < 0:
            raise ModelConfigError(
                f"Batching parameter batch_timeout_micros is {self.batch_timeout_micros}; it cannot be negative."
            )


_BATCHING_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
# Fields of TF Serving's BatchingParameters that only matter to its own scheduler: accepted and ignored, so a
# production batching file can be used here unchanged.
_BATCHING_IGNORED = (
    "thread_pool_name",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
    "mixed_priority_batching_policy",
    "batch_padding_policy",
    "enable_priority_queue",
    "low_priority_queue_options",
)
_BATCHING_ITEM = re.compile(
    r"\s*(?P<name>[A-Za-z_]+)\s*(?:\{\s*value\s*:\s*(?P<wrapped>[^}\s]+)\s*\}|:\s*(?P<plain>\"[^\"]*\"|\S+))"
    r"|\s*(?P<comment>#[^\n]*)"
)


def parse_batching_parameters(text: str, source: str, base: BatchingOptions) -> BatchingOptions:
    """Applies a TF Serving `--batching_parameters_file` (text `BatchingParameters`) on top of `base`.

    Raises:
        ModelConfigError: Unknown fields (with a hint) or values that are not integers.
    """
    values: dict[str, int] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _BATCHING_ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise ModelConfigError(
                f"{source}: cannot parse batching parameters near {text[pos : pos + 40]!r}."
            )
        pos = m.end()
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if m.group("comment"):
            continue
        name = m.group("name")
        raw = m.group("wrapped") or m.group("plain")
        if name in _BATCHING_IGNORED:
            continue
        if name not in _BATCHING_FIELDS:
            close = difflib.get_close_matches(name, _BATCHING_FIELDS, n=1)
            hint = f' Did you mean "{close[0]}"?' if close else ""
            raise ModelConfigError(f"{source}: unknown batching parameter {name!r}.{hint}")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ModelConfigError(f"{source}: {name} must be an integer, got {raw!r}.") from None
    return dataclasses.replace(base, **values)

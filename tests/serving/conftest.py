"""Session fixtures: real SavedModels on disk and one `dxpipe serve` server over real HTTP on loopback.

TensorFlow is imported once, by this test process; the server runs in a background thread of it.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
from pathlib import Path

import pytest
import requests
import serving_models

from serving.config import ModelConfig, VersionPolicy
from serving.httpserver import HttpLimits
from serving.server import ServerOptions, ServerThread

MODELS_CONFIG = """
model_config_list {{
  config {{
    name: "half_plus_two"
    base_path: "{root}/half_plus_two"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "multi" base_path: "{root}/multi" model_platform: "tensorflow" }}
  config {{ name: "dtypes" base_path: "{root}/dtypes" model_platform: "tensorflow" }}
  config {{ name: "examples" base_path: "{root}/examples" model_platform: "tensorflow" }}
  config {{ name: "wdbc" base_path: "{root}/wdbc" model_platform: "tensorflow" }}
  config {{ name: "clinic" base_path: "{root}/clinic" model_platform: "tensorflow" }}
  config {{ name: "broken" base_path: "{root}/broken" model_platform: "tensorflow" }}
  config {{ name: "empty" base_path: "{root}/empty" model_platform: "tensorflow" }}
}}
"""


@dataclasses.dataclass
class ModelStore:
    root: Path
    sources: Path  # SavedModels not served, for tests that publish versions

    def source(self, name: str) -> Path:
        return self.sources / name


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> ModelStore:
    root = tmp_path_factory.mktemp("models")
    sources = tmp_path_factory.mktemp("sources")
    serving_models.half_plus(str(root / "half_plus_two" / "1"), 2.0)
    serving_models.half_plus(str(root / "half_plus_two" / "2"), 3.0)
    serving_models.half_plus(str(root / "half_plus_two" / "3"), 4.0)  # on disk, not in the specific policy
    serving_models.multi_input(str(root / "multi" / "1"))
    serving_models.dtypes_model(str(root / "dtypes" / "1"))
    serving_models.examples_model(str(root / "examples" / "1"))
    serving_models.wdbc(str(root / "wdbc" / "7"))
    serving_models.clinic(str(root / "clinic" / "1"))
    (root / "wdbc" / ".incoming-8-123").mkdir()  # a staging directory: ignored
    (root / "wdbc" / "notaversion").mkdir()
    serving_models.half_plus(str(root / "broken" / "1"), 2.0)
    shutil.copytree(root / "broken" / "1", root / "broken" / "2")
    (root / "broken" / "2" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    (root / "empty").mkdir()
    for name, offset in (("hp_a", 10.0), ("hp_b", 20.0), ("hp_c", 30.0)):
        serving_models.half_plus(str(sources / name), offset)
    return ModelStore(root, sources)


@pytest.fixture(scope="session")
def models_config(model_store, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "models.config"
    path.write_text(MODELS_CONFIG.format(root=model_store.root))
    return path


@pytest.fixture(scope="session")
def server(models_config, tmp_path_factory) -> ServerThread:
    from serving.config import load_model_config_file

    options = ServerOptions(
        models=load_model_config_file(models_config),
        access_log=str(tmp_path_factory.mktemp("logs") / "access.log"),
        port=0,
        file_system_poll_seconds=0.1,
        limits=HttpLimits(max_body_bytes=8 * 1024 * 1024, read_timeout=1.5, idle_timeout=3.0),
    )
    running = ServerThread(options)
    # As `dxpipe serve` does after startup: TensorFlow's objects live as long as the process, so keep the
    # cyclic collector off them (it would otherwise walk them all on every full collection).
    gc.freeze()
    yield running
    running.stop()


class Api:
    """Tiny helper: requests against the session server, returning (status, parsed JSON or text)."""

    def __init__(self, session: requests.Session, url: str):
        self.session = session
        self.url = url

    def get(self, path: str, **kwargs):
        return self.session.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, body=None, **kwargs):
        if isinstance(body, (bytes, str)):
            return self.session.post(self.url + path, data=body, timeout=30, **kwargs)
        return self.session.post(self.url + path, json=body, timeout=30, **kwargs)


@pytest.fixture(scope="session")
def api(server) -> Api:
    return Api(requests.Session(), server.url)


@pytest.fixture
def fresh_model_config():
    """Builds a ModelConfig for a test-owned base path."""

    def make(name: str, base: Path, **kwargs) -> ModelConfig:
        return ModelConfig(
            name=name, base_path=str(base), policy=VersionPolicy(**kwargs) if kwargs else VersionPolicy()
        )

    return make


def pytest_collection_modifyitems(items):
    # The fixture "broken/2" is a corrupt saved_model.pb on purpose; protobuf warns while failing to parse it.
    expected = pytest.mark.filterwarnings("ignore:Unexpected end-group tag:RuntimeWarning")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(expected)

"""Prometheus metrics and the structured access log."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

METRICS = "/monitoring/prometheus/metrics"


def scrape(api) -> dict[str, float]:
    """Every sample, parsed by prometheus_client's own parser, keyed as `name{label="value",...}` (sorted)."""
    response = api.get(METRICS)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_request_counters_latency_and_model_gauges(api):
    before = scrape(api)
    key = 'dxpipe_serving_requests_total{code="200",model="wdbc",verb="status"}'
    missing = 'dxpipe_serving_requests_total{code="404",model="wdbc",verb="metadata"}'
    for _ in range(3):
        api.get("/v1/models/wdbc")
    api.get("/v1/models/wdbc/versions/99/metadata")
    after = scrape(api)
    assert after[key] - before.get(key, 0) == 3
    assert after[missing] - before.get(missing, 0) == 1
    count = 'dxpipe_serving_request_latency_seconds_count{model="wdbc",verb="status"}'
    assert after[count] - before.get(count, 0) == 3
    inf_bucket = 'dxpipe_serving_request_latency_seconds_bucket{le="+Inf",model="wdbc",verb="status"}'
    assert after[inf_bucket] == after[count]
    assert after['dxpipe_serving_loaded_versions{model="half_plus_two"}'] == 2
    assert after['dxpipe_serving_loaded_versions{model="empty"}'] == 0
    assert after['dxpipe_serving_model_version_state{model="broken",state="END",version="2"}'] == 1


def test_unknown_model_names_do_not_become_labels(api):
    api.post("/v1/models/some-invented-name:predict", {"instances": [1]})
    text = api.get(METRICS).text
    assert "some-invented-name" not in text
    samples = [(s.name, s.labels) for f in text_string_to_metric_families(text) for s in f.samples]
    assert ("dxpipe_serving_requests_total", {"model": "", "verb": "predict", "code": "404"}) in samples


def test_batches_are_counted(api):
    before = scrape(api)
    api.post("/v1/models/half_plus_two/versions/1:predict", {"instances": [1.0, 2.0, 3.0]})
    after = scrape(api)
    rows = 'dxpipe_serving_batch_rows_sum{model="half_plus_two"}'
    assert after[rows] - before.get(rows, 0) == 3
    served = 'dxpipe_serving_batched_requests_total{model="half_plus_two"}'
    assert after[served] - before.get(served, 0) == 1


def access_lines(server) -> list[str]:
    async def flush():
        server.server.access_log.flush()

    server.call(flush())
    return Path(server.server.options.access_log).read_text().splitlines()


def test_access_log_is_json_without_bodies(api, server):
    secret_site = "PATIENT-4242-SECRET"
    row = {
        "radius_mean": 12345.678,
        "texture_mean": 1.0,
        "perimeter_mean": 1.0,
        "area_mean": 1.0,
        "smoothness_mean": 1.0,
        "site": secret_site,
    }
    assert api.post("/v1/models/wdbc:predict", {"instances": [row]}).status_code == 200
    assert api.post("/v1/models/wdbc:predict", {"instances": [{**row, "site": 5}]}).status_code == 400
    api.get("/v1/models/wdbc?token=abc")
    records = access_lines(server)
    lines = [json.loads(line) for line in records]
    ok, bad, status = lines[-3:]
    assert ok["method"] == "POST"
    assert ok["path"] == "/v1/models/wdbc:predict"
    assert ok["status"] == 200
    assert ok["model"] == "wdbc"
    assert ok["version"] == 7
    assert ok["verb"] == "predict"
    assert ok["latency_ms"] > 0
    assert ok["bytes_in"] > 0 and ok["bytes_out"] > 0
    assert bad["status"] == 400
    assert status["path"] == "/v1/models/wdbc"  # no query string either
    text = "\n".join(records)
    assert secret_site not in text
    assert "12345.678" not in text
    assert "probability" not in text

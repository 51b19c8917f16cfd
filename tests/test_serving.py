"""`slimctr serve`'s app (issue 20), in-process: scores equal the bundle's, every bad request is
a 4xx with one line, scores do not depend on their batch, and the metrics count what happened."""

from __future__ import annotations

import asyncio
import json
import warnings

import numpy as np
import polars as pl
import pytest
import torch

from slimctr.serving import BadRequest, Metrics, Scorer, ServeConfig, create_app
from slimctr.training import run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note on its httpx client
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def served(trained):
    bundle = run.load_model(trained / "deepfm")
    rows = pl.read_csv(trained / "raw.csv").head(40).to_dicts()
    config = ServeConfig(max_rows=50, max_body_bytes=20_000)
    with TestClient(create_app(bundle, config)) as client:
        yield client, bundle, rows


def test_predict_scores_rows_as_the_bundle_does(served):
    client, bundle, rows = served
    response = client.post("/predict", json=rows)
    assert response.status_code == 200
    got = np.array(response.json()["probabilities"])
    assert np.allclose(got, bundle.predict(pl.DataFrame(rows)), atol=1e-7)


def test_a_number_and_its_text_are_one_category_and_null_is_the_missing_value(served):
    client, _, rows = served
    as_text = [{k: (str(v) if k.startswith("C") else v) for k, v in rows[0].items()}]
    first = client.post("/predict", json=rows[:1]).json()["probabilities"]
    assert client.post("/predict", json=as_text).json()["probabilities"] == first
    missing = [dict(rows[0], C1=None, I1=None)]
    assert client.post("/predict", json=missing).status_code == 200


BAD = [
    (b"[{", 400, "not valid JSON"),
    (b"{}", 400, "non-empty JSON list"),
    (b"[]", 400, "non-empty JSON list"),
    (b"[3]", 400, "row 1 is not an object"),
    (b'[{"C1": "a"}]', 400, "has no field"),
    (b"NaN", 400, "NaN is not a number"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD)
def test_malformed_bodies_are_400_with_one_line(served, body, status, fragment):
    client, _, _ = served
    response = client.post("/predict", content=body)
    assert response.status_code == status and fragment in response.json()["error"]
    assert "\n" not in response.json()["error"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"C1": [1]}, "a category is text or a number"),
        ({"C1": True}, "a category is text or a number"),
        ({"I1": "high"}, "a number or null"),
        ({"I1": float("inf")}, "Infinity is not a number"),  # json.dumps writes Infinity
        ({"C2": float("-inf")}, "-Infinity is not a number"),
    ],
)
def test_wrong_types_and_non_finite_numbers_are_400(served, change, fragment):
    client, _, rows = served
    response = client.post("/predict", content=json.dumps([dict(rows[0], **change)]))
    assert response.status_code == 400 and fragment in response.json()["error"]


def test_too_many_rows_and_too_large_bodies_are_413(served):
    client, _, rows = served
    assert client.post("/predict", json=rows * 2).status_code == 413  # 80 rows, 50 allowed
    large = b"[" + b" " * 30_000 + b"]"
    assert client.post("/predict", content=large).status_code == 413


def test_unknown_paths_and_methods_are_404_and_405(served):
    client, _, _ = served
    assert client.get("/score").status_code == 404
    assert client.get("/predict").status_code == 405
    assert client.post("/health").status_code == 405


def test_health_metadata_and_metrics(served):
    client, bundle, rows = served
    assert client.get("/health").json() == {"status": "ok"}
    metadata = client.get("/metadata").json()
    assert metadata["bundle_checksum"] == bundle.checksum and metadata["model"] == "deepfm"
    client.post("/predict", json=[dict(rows[0], C4="never seen")])
    text = client.get("/metrics").text
    assert 'slimctr_requests_total{path="/predict",status="200"}' in text
    assert 'slimctr_oov_values_total{field="C4"}' in text and "slimctr_batch_rows_bucket" in text


def test_scores_do_not_depend_on_the_requests_they_are_batched_with(trained):
    bundle = run.load_model(trained / "deepfm")
    scorer = Scorer(bundle, ServeConfig(block_rows=16), Metrics(["C1", "C2", "C3", "C4"]))
    rows = pl.read_csv(trained / "raw.csv").head(50).to_dicts()
    alone = scorer._probabilities(scorer.encode(rows[:3]))
    together = scorer._probabilities(scorer.encode(rows[20:37] + rows[:3] + rows[40:45]))
    assert np.array_equal(alone, together[17:20])


def test_a_full_queue_is_429_and_a_request_not_scored_in_time_is_503(trained):
    bundle = run.load_model(trained / "deepfm")
    rows = pl.read_csv(trained / "raw.csv").head(2).to_dicts()
    config = ServeConfig(queue_size=1, timeout_s=0.05)
    scorer = Scorer(bundle, config, Metrics(["C1", "C2", "C3", "C4"]))

    async def without_a_batcher() -> tuple[int, int]:
        scorer.queue = asyncio.Queue(maxsize=1)  # nothing takes from it
        batch = scorer.encode(rows)
        first = asyncio.create_task(scorer.score(batch))
        await asyncio.sleep(0)
        statuses = []
        for task in (asyncio.create_task(scorer.score(batch)), first):
            try:
                await task
            except BadRequest as refused:
                statuses.append(refused.status)
        return statuses[0], statuses[1]

    assert asyncio.run(without_a_batcher()) == (429, 503)


def test_a_bundle_with_shared_weights_scores_as_a_copied_one(trained):
    from slimctr.bundle import Bundle

    path = run.load_model(trained / "deepfm").path
    copied, mapped = Bundle(path), Bundle(path, share_weights=True)
    rows = pl.read_csv(trained / "raw.csv").head(30)
    assert np.array_equal(copied.predict(rows), mapped.predict(rows))
    given = copied.module.state_dict()
    assert all(torch.equal(v, given[k]) for k, v in mapped.module.state_dict().items())

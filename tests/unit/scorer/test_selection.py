import pytest
from fastapi.testclient import TestClient

from services.scorer.config import ScorerSettings
from services.scorer.main import create_app
from services.scorer.service import band_positions, select_band
from shared.errors import InvalidInput
from shared.schemas.scoring import SelectRequest


def test_band_of_eight_keeps_two_like_the_reference_code():
    assert list(band_positions(8, 0.5, 0.8)) == [4, 5]
    assert list(band_positions(16, 0.5, 0.8)) == [8, 9, 10, 11]
    assert list(band_positions(100, 0.29, 0.3)) == [29]  # no floating-point off-by-one
    assert list(band_positions(5, 0.0, 1.0)) == [0, 1, 2, 3, 4]
    # fewer OOD samples than the band needs: the one at its low edge, not nothing
    assert list(band_positions(2, 0.5, 0.8)) == [1] and list(band_positions(1, 0.5, 0.8)) == [0]
    assert list(band_positions(0, 0.5, 0.8)) == []


def test_select_sorts_by_energy_and_keeps_the_band():
    energies = [0.7, -3.0, 0.1, 2.0, -1.0, 5.0, 1.5, -2.0]  # ascending: 1,7,4,2,0,6,3,5
    result = select_band(SelectRequest(energies=energies, band=(0.5, 0.8)))
    assert result.selected == [0, 6]
    assert result.low_energy == pytest.approx(0.4)  # numpy linear quantile
    assert result.low_energy <= energies[0] and energies[6] <= result.high_energy


def test_count_spreads_over_the_band():
    energies = list(range(20))  # band [0.5, 1.0) = 10..19
    assert select_band(SelectRequest(energies=energies, band=(0.5, 1.0), count=2)).selected == [12, 17]
    assert select_band(SelectRequest(energies=energies, band=(0.5, 1.0), count=50)).selected == list(
        range(10, 20)
    )
    assert select_band(SelectRequest(energies=energies, band=(0.5, 1.0), count=0)).selected == []


def test_stratified_selection_bands_each_label_and_shares_the_count():
    # label a: energies 0..9 (idx 0-9); label b: energies 100..103 (idx 10-13)
    energies = [float(i) for i in range(10)] + [100.0, 101.0, 102.0, 103.0]
    labels = ["a"] * 10 + ["b"] * 4
    plain = select_band(SelectRequest(energies=energies, band=(0.5, 0.8)))
    assert plain.selected == [7, 8, 9, 10]  # unstratified: one quantile band over both labels
    strat = select_band(SelectRequest(energies=energies, labels=labels, stratify=True, band=(0.5, 0.8)))
    assert strat.selected == [5, 6, 7, 12]  # a: positions 5..7 of 10; b: position 2 of 4
    counted = select_band(
        SelectRequest(energies=energies, labels=labels, stratify=True, band=(0.5, 0.8), count=2)
    )
    assert sorted(labels[i] for i in counted.selected) == ["a", "b"]


def test_bad_selection_input_is_rejected():
    with pytest.raises(InvalidInput):
        select_band(SelectRequest(energies=[1.0, 2.0], labels=["a"], stratify=True))
    with pytest.raises(InvalidInput):
        select_band(SelectRequest(energies=[1.0, 2.0], stratify=True))
    with pytest.raises(InvalidInput):
        select_band(SelectRequest(energies=[1.0, float("nan")]))


def test_select_api_validates_and_authenticates(tmp_path):
    settings = ScorerSettings(artifact_dir=tmp_path, api_keys={"orchestrator": "s3cret"})
    with TestClient(create_app(settings)) as client:
        body = {"energies": [3.0, 1.0, 2.0, 0.0], "band": [0.5, 1.0]}
        assert client.post("/v1/select", json=body).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        ok = client.post("/v1/select", json=body, headers=auth)
        assert ok.status_code == 200 and ok.json()["selected"] == [2, 0]
        bad = client.post("/v1/select", json={**body, "band": [0.8, 0.5]}, headers=auth)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["band"]
        extra = client.post("/v1/select", json={**body, "surprise": 1}, headers=auth)
        assert extra.status_code == 422
        mismatch = client.post("/v1/select", json={**body, "labels": ["a"], "stratify": True}, headers=auth)
        assert mismatch.status_code == 422 and mismatch.json()["detail"][0]["loc"] == ["labels"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["status"] == "ready"

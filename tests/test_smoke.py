from conftest import load_scenario, rule_ids


def test_health_answers_with_the_version(client):
    response = client.http.get(f"{client.base_url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["version"]


def test_cramps_only_patient_gets_the_labs_missing_card(client):
    request, expected = load_scenario("cramps-only")
    response = client.call(expected["service"], request)
    assert response.status_code == 200
    assert rule_ids(response) == ["cramp-labs-missing"]

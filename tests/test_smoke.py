def test_dashboard_renders_for_owner(client_for, alice):
    response = client_for(alice).get("/")
    assert response.status_code == 200
    assert b"Acme Tools" in response.content

"""Credentials in URLs are masked; everything else of the URL is kept."""

from loadgrid import redact


def test_password_and_secret_query_values_are_masked():
    assert redact.url("https://bob:s3cret@api.example:8443/v1/predict?token=abc&n=2") == \
        "https://bob:***@api.example:8443/v1/predict?token=***&n=2"
    assert redact.url("http://tok123@host/x") == "http://***@host/x"


def test_urls_without_credentials_and_non_urls_are_unchanged():
    for value in ("http://localhost:8080", "http://h/p?n=1&mode=fast", "images/", "", None):
        assert redact.url(value) == value
    assert not redact.has_credentials("http://localhost:8080")
    assert redact.has_credentials("http://a:b@localhost:8080")


def test_a_malformed_url_keeps_its_mistake_but_not_its_credentials():
    assert redact.url("http://[::1:8080") == "http://[::1:8080"
    assert redact.url("http://u:pw@[::1:8080/x") == "http://***@[::1:8080/x"


def test_urls_inside_text_are_masked():
    said = "GET https://u:pw@h/x?api_key=k1 failed; retry http://h2/ok"
    assert redact.text(said) == "GET https://u:***@h/x?api_key=*** failed; retry http://h2/ok"

"""A Python program as a user writes it: application default credentials, then a token.

GOOGLE_APPLICATION_CREDENTIALS names the config and GOOGLE_CLOUD_PROJECT the
project, as in an Iris task (without it google-auth would ask Cloud Resource
Manager for the project, a real Google endpoint).

Run by the tests in a fresh process with the task's environment; prints one JSON
line: {"ok": true, "token": ...} or {"ok": false, "error": ...}. Works with every
google-auth release the suite covers (no newer API).
"""

import json


def redirect_to_standin() -> None:
    """Tests only: old google-auth releases accept only https://*.googleapis.com URLs, so the
    config keeps Google's and every connection is dialled to the local TLS stand-in instead
    (its throwaway certificate is trusted through REQUESTS_CA_BUNDLE)."""
    import os

    address = os.environ.get("STANDIN_TLS_ADDR")
    if not address:
        return
    import urllib3.util.connection

    host, port = address.rsplit(":", 1)
    original = urllib3.util.connection.create_connection

    def create_connection(_address, *args, **kwargs):  # type: ignore[no-untyped-def]
        return original((host, int(port)), *args, **kwargs)

    urllib3.util.connection.create_connection = create_connection


def main() -> None:
    redirect_to_standin()
    import google.auth
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        credentials.refresh(google.auth.transport.requests.Request())
        print(json.dumps({"ok": True, "token": credentials.token, "google_auth": google.auth.__version__}))
    except Exception as exc:  # the test reads the client's own error text
        print(
            json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}", "google_auth": google.auth.__version__})
        )


if __name__ == "__main__":
    main()

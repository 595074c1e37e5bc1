"""A Python program as a user writes it: application default credentials, then a token.

GOOGLE_APPLICATION_CREDENTIALS names the config and GOOGLE_CLOUD_PROJECT the
project, as in an Iris task (without it google-auth would ask Cloud Resource
Manager for the project, a real Google endpoint).

Run by the tests in a fresh process with the task's environment; prints one JSON
line: {"ok": true, "token": ...} or {"ok": false, "error": ...}. Works with every
google-auth release the suite covers (no newer API).
"""

import json


def main() -> None:
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

"""Times a google-auth external_account credential's first refresh() (prints milliseconds)."""

import time

import google.auth
import google.auth.transport.requests

credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
started = time.perf_counter()
credentials.refresh(google.auth.transport.requests.Request())
print(f"{(time.perf_counter() - started) * 1000:.3f}")

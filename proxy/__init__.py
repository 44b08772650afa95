"""Calling Trackunit's API for an account: a path that cannot leave TRACKUNIT_API_URL, and the forwarding."""

"""Everything that talks to Trackunit's auth side: the callback's identity, tokens, scopes."""

"""An offline stand-in for Trackunit: token endpoint, JWKS, install callbacks, a REST API.

For local development, the demo and integration tests. It knows nothing of
the vault service; it only speaks Trackunit's documented HTTP contract.
"""

from .app import create_simulator
from .keys import SigningKey
from .server import ServerThread, serve_in_thread
from .state import SimulatorState

__all__ = ["create_simulator", "SigningKey", "ServerThread", "serve_in_thread", "SimulatorState"]

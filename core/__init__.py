"""The service's shared foundations: configuration, errors, logging, metrics, tunables and HTTP retries.

Every other package may import these; they import nothing of the service's own.
"""

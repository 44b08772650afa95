"""The vault: sealing secrets (keys, seal) and keeping them in Redis (store, accounts, tokencache).

Nothing in this package imports Flask.
"""

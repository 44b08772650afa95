"""`python -m cli keygen`: a new VAULT_KEY with no configuration at all.

`flask ... vault keygen` prints the same, but Flask builds the app (and so
needs REDIS_URL, VAULT_KEY, ...) before it runs any app command.
"""

from __future__ import annotations

import click

from cli.vault_commands import keygen


@click.group(help="Commands that need no configuration (the others: flask --app app vault|accounts ...).")
def main() -> None:
    pass


main.add_command(keygen)

if __name__ == "__main__":
    main(prog_name="python -m cli")

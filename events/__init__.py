"""Account lifecycle events: their JSON shape, the feed, webhook signing and delivery (the outbox is vault.outbox)."""
